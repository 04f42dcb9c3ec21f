import { eq } from 'drizzle-orm';
import { HttpResponse, http } from 'msw';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cryptoPayments, spend } from '../../db/schema/index.js';
import { createInvoice } from '../../src/payments/invoices.js';
import { applyStatusReport } from '../../src/payments/state-machine.js';
import { issueToken } from '../../src/signing/caller-tokens.js';
import { createTenant, updateTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';
import { mockNetwork } from '../support/msw.js';
import { data, trpc } from '../support/trpc.js';

/**
 * billing.packs / createInvoice / payments / usage over tRPC, with the NOWPayments API mocked by
 * msw (the only HTTP that leaves the system) and real PostgreSQL and Redis behind the gateway.
 */
const API = 'https://api.nowpayments.test/v1';
const API_KEY = 'np-api-key-never-shown';
const IPN_URL = 'https://gateway.example.test/api/crypto/webhook';

type InvoiceCall = {
  apiKey: string | null;
  body: Record<string, unknown>;
  /** Our row for the order, as the provider was asked: it must already exist. */
  rowAtCall: { status: string } | undefined;
};
let invoices = 0;
const provider = {
  calls: [] as InvoiceCall[],
  /** The provider's answer to the next invoice request (default: a new invoice). */
  answer: (call: InvoiceCall): Response => {
    invoices += 1;
    return HttpResponse.json({
      id: 4_500_000_000 + invoices,
      invoice_url: `https://nowpayments.test/payment/?iid=${4_500_000_000 + invoices}`,
      order_id: call.body.order_id,
    });
  },
};

const network = mockNetwork(
  http.post(`${API}/invoice`, async ({ request }) => {
    const body = (await request.json()) as Record<string, unknown>;
    const [rowAtCall] = await harness.db
      .select({ status: cryptoPayments.status })
      .from(cryptoPayments)
      .where(eq(cryptoPayments.id, String(body.order_id)));
    const call = { apiKey: request.headers.get('x-api-key'), body, rowAtCall };
    provider.calls.push(call);
    return provider.answer(call);
  }),
);
const defaultAnswer = provider.answer;

let harness: Harness;
let tenantA: string;
let tenantB: string;
const tokens = { memberA: '', operator: '', admin: '' };

beforeAll(async () => {
  harness = await createHarness({
    config: { nowpaymentsApiKey: API_KEY, nowpaymentsApiUrl: API, nowpaymentsIpnUrl: IPN_URL },
  });
  tenantA = (await createTenant(harness.services, { name: 'A', tier: 4 })).id;
  tenantB = (await createTenant(harness.services, { name: 'B', tier: 4 })).id;
  tokens.memberA = (await issueToken(harness.services, { role: 'member', tenantId: tenantA })).token;
  tokens.operator = (await issueToken(harness.services, { role: 'operator' })).token;
  tokens.admin = (await issueToken(harness.services, { role: 'admin' })).token;
});
afterEach(() => {
  provider.calls = [];
  provider.answer = defaultAnswer;
});
afterAll(async () => {
  network.close();
  await harness.close();
});

type ErrorBody = { message: string; data: { httpStatus: number; code: string; appCode?: string } };
const invoice = (token: string, input: unknown) =>
  trpc(harness, token, 'billing.createInvoice', input, 'POST');
const rowsOf = (tenantId: string) =>
  harness.db.select().from(cryptoPayments).where(eq(cryptoPayments.tenantId, tenantId));
const errorOf = (result: { body: { error?: unknown } }) => result.body.error as ErrorBody;

describe('billing.packs', () => {
  it('lists the three default packs with exact prices and credits, for any authenticated caller', async () => {
    for (const token of [tokens.memberA, tokens.operator, tokens.admin]) {
      const result = await trpc(harness, token, 'billing.packs');
      expect(result.status).toBe(200);
      expect(data(result)).toEqual([
        { name: 'starter', priceAmount: '5', priceCurrency: 'usd', creditsMicro: '5000000' },
        { name: 'standard', priceAmount: '10', priceCurrency: 'usd', creditsMicro: '10500000' },
        { name: 'premium', priceAmount: '25', priceCurrency: 'usd', creditsMicro: '27500000' },
      ]);
    }
    expect((await trpc(harness, undefined, 'billing.packs')).status).toBe(401);
  });
});

describe('billing.createInvoice', () => {
  it('writes a waiting row, then asks the provider with our payment id as order_id', async () => {
    const result = await invoice(tokens.memberA, { pack: 'standard' });
    expect(result.status).toBe(200);
    const answer = data<{ paymentId: string; invoiceUrl: string }>(result);
    expect(answer.paymentId).toMatch(/^pay_[0-9a-f]{32}$/);
    expect(answer.invoiceUrl).toBe(`https://nowpayments.test/payment/?iid=${4_500_000_000 + invoices}`);

    expect(provider.calls).toHaveLength(1);
    const [call] = provider.calls;
    expect(call?.apiKey).toBe(API_KEY);
    expect(call?.rowAtCall).toEqual({ status: 'waiting' });
    expect(call?.body).toMatchObject({
      order_id: answer.paymentId,
      price_amount: 10,
      price_currency: 'usd',
      ipn_callback_url: IPN_URL,
      order_description: expect.stringContaining('standard'),
    });

    const [row] = await harness.db
      .select()
      .from(cryptoPayments)
      .where(eq(cryptoPayments.id, answer.paymentId));
    expect(row).toMatchObject({
      tenantId: tenantA,
      provider: 'nowpayments',
      pack: 'standard',
      priceAmount: '10',
      priceCurrency: 'usd',
      creditsMicro: 10_500_000n,
      status: 'waiting',
      statusRank: 0,
      // The provider's numeric id, stored as text.
      providerInvoiceId: String(4_500_000_000 + invoices),
      invoiceUrl: answer.invoiceUrl,
      mintedAt: null,
    });
    expect(JSON.stringify(harness.logs)).not.toContain(API_KEY);
  });

  it.each([
    ['a 500', () => new HttpResponse('boom', { status: 500 })],
    ['no connection', () => HttpResponse.error()],
    ['a 200 without an invoice', () => HttpResponse.json({ status: 'ok' })],
  ])(
    'answers 503 provider_unavailable on %s and keeps the waiting row (the provider may have it)',
    async (_, answer) => {
      provider.answer = answer;
      const before = (await rowsOf(tenantA)).length;
      const result = await invoice(tokens.memberA, { pack: 'starter' });
      expect(result.status).toBe(503);
      expect(provider.calls).toHaveLength(1);
      const paymentId = provider.calls[0]?.body.order_id;
      expect(errorOf(result).data).toMatchObject({ appCode: 'provider_unavailable', paymentId });
      const rows = await rowsOf(tenantA);
      expect(rows).toHaveLength(before + 1);
      expect(rows.find((row) => row.id === paymentId)).toMatchObject({
        status: 'waiting',
        pack: 'starter',
        providerInvoiceId: null,
        invoiceUrl: null,
      });
    },
  );

  it('answers 503 with the provider’s retry delay on a 429, and leaves no row (nothing was created)', async () => {
    provider.answer = () => new HttpResponse('slow down', { status: 429, headers: { 'retry-after': '7' } });
    const before = await rowsOf(tenantA);
    const result = await invoice(tokens.memberA, { pack: 'starter' });
    expect(result.status).toBe(503);
    expect(errorOf(result).data).toMatchObject({ appCode: 'provider_unavailable', retryAfterMs: 7_000 });
    expect(provider.calls).toHaveLength(1);
    expect(await rowsOf(tenantA)).toEqual(before);
  });

  it('answers 503 provider_unavailable when the provider refuses (400) and leaves no row', async () => {
    provider.answer = () => HttpResponse.json({ message: 'Invalid api key' }, { status: 400 });
    const before = await rowsOf(tenantA);
    const result = await invoice(tokens.memberA, { pack: 'premium' });
    expect(result.status).toBe(503);
    expect(errorOf(result).data.appCode).toBe('provider_unavailable');
    expect(errorOf(result).message).toContain('refused');
    expect(provider.calls).toHaveLength(1);
    expect(await rowsOf(tenantA)).toEqual(before);
    expect(JSON.stringify(result.body)).not.toContain(API_KEY);
  });

  it('refuses an unknown pack with 400 naming the packs, before the provider or the table', async () => {
    const before = await rowsOf(tenantA);
    for (const pack of ['platinum', 'Not A Pack!']) {
      const result = await invoice(tokens.memberA, { pack });
      expect(result.status).toBe(400);
    }
    const unknown = await invoice(tokens.memberA, { pack: 'platinum' });
    expect(errorOf(unknown).message).toContain('starter, standard, premium');
    expect(provider.calls).toHaveLength(0);
    expect(await rowsOf(tenantA)).toEqual(before);
  });

  it('answers feature_disabled without a NOWPAYMENTS_API_KEY, writing nothing', async () => {
    const { nowpaymentsApiKey: _, ...config } = harness.services.config;
    const before = await rowsOf(tenantA);
    await expect(
      createInvoice(
        { ...harness.services, config },
        { tenantId: tenantA, pack: 'starter', requestedBy: 't' },
      ),
    ).rejects.toMatchObject({ code: 'feature_disabled' });
    expect(provider.calls).toHaveLength(0);
    expect(await rowsOf(tenantA)).toEqual(before);
  });

  it('refuses a frozen tenant’s member (403 tenant_frozen) and never calls the provider', async () => {
    const frozen = (await createTenant(harness.services, { name: 'Frozen', tier: 4 })).id;
    const member = (await issueToken(harness.services, { role: 'member', tenantId: frozen })).token;
    await updateTenant(harness.services, { id: frozen, frozen: true });
    const result = await invoice(member, { pack: 'starter' });
    expect(result.status).toBe(403);
    expect(errorOf(result).data.appCode).toBe('tenant_frozen');
    expect(provider.calls).toHaveLength(0);
    expect(await rowsOf(frozen)).toEqual([]);
  });
});

describe('who may open invoices and read payments', () => {
  it('a member opens one for its own tenant, named or not; naming another tenant is NOT_FOUND', async () => {
    expect((await invoice(tokens.memberA, { tenantId: tenantA, pack: 'starter' })).status).toBe(200);
    const other = await invoice(tokens.memberA, { tenantId: tenantB, pack: 'starter' });
    expect(other.status).toBe(404);
    expect(errorOf(other).data.code).toBe('NOT_FOUND');
    for (const path of ['billing.payments', 'billing.usage']) {
      const read = await trpc(harness, tokens.memberA, path, { tenantId: tenantB });
      expect(read.status).toBe(404);
    }
    expect(provider.calls).toHaveLength(1);
    expect(await rowsOf(tenantB)).toEqual([]);
  });

  it('an operator may not open an invoice (FORBIDDEN) but reads payments and usage naming the tenant', async () => {
    const result = await invoice(tokens.operator, { tenantId: tenantB, pack: 'starter' });
    expect(result.status).toBe(403);
    expect(errorOf(result).data.code).toBe('FORBIDDEN');
    expect(provider.calls).toHaveLength(0);
    expect((await trpc(harness, tokens.operator, 'billing.payments', { tenantId: tenantB })).status).toBe(
      200,
    );
    expect((await trpc(harness, tokens.operator, 'billing.usage', { tenantId: tenantB })).status).toBe(200);
  });

  it('an admin opens one naming the tenant; without a tenantId 400; an unknown tenant 404', async () => {
    const result = await invoice(tokens.admin, { tenantId: tenantB, pack: 'premium' });
    expect(result.status).toBe(200);
    const { paymentId } = data<{ paymentId: string }>(result);
    expect(await rowsOf(tenantB)).toEqual([expect.objectContaining({ id: paymentId, pack: 'premium' })]);
    expect((await invoice(tokens.admin, { pack: 'premium' })).status).toBe(400);
    const unknown = await invoice(tokens.admin, { tenantId: `ten_${'0'.repeat(32)}`, pack: 'premium' });
    expect(unknown.status).toBe(404);
    expect(provider.calls).toHaveLength(1);
  });
});

describe('PAYMENTS=off', () => {
  it('answers 503 feature_disabled; the provider is never called and no row is written', async () => {
    const off = await createHarness({
      config: { payments: 'off', nowpaymentsApiKey: API_KEY, nowpaymentsApiUrl: API },
    });
    try {
      const tenantId = (await createTenant(off.services, { name: 'Off', tier: 4 })).id;
      const result = await trpc(
        off,
        off.adminToken,
        'billing.createInvoice',
        { tenantId, pack: 'starter' },
        'POST',
      );
      expect(result.status).toBe(503);
      expect(errorOf(result).data.appCode).toBe('feature_disabled');
      expect(provider.calls).toHaveLength(0);
      expect(await off.db.select().from(cryptoPayments)).toEqual([]);
    } finally {
      await off.close();
    }
  });
});

describe('billing.payments', () => {
  it('lists newest first with money as strings, and shows a finished payment’s mint', async () => {
    const tenantId = (await createTenant(harness.services, { name: 'Payer', tier: 4 })).id;
    const member = (await issueToken(harness.services, { role: 'member', tenantId })).token;
    const first = data<{ paymentId: string; invoiceUrl: string }>(await invoice(member, { pack: 'starter' }));
    const second = data<{ paymentId: string; invoiceUrl: string }>(
      await invoice(member, { pack: 'premium' }),
    );
    // Two rows with the same created_at would still list in a fixed order; make the order a fact.
    await harness.db
      .update(cryptoPayments)
      .set({ createdAt: new Date(Date.now() - 60_000) })
      .where(eq(cryptoPayments.id, first.paymentId));

    const outcome = await applyStatusReport(harness.services, {
      orderId: second.paymentId,
      providerPaymentId: '5077125051',
      status: 'finished',
      updatedAtMs: Date.now(),
      actuallyPaid: '0.00041',
      payCurrency: 'btc',
    });
    expect(outcome).toMatchObject({ status: 'processed', minted: true });

    const listed = data<Record<string, unknown>[]>(await trpc(harness, member, 'billing.payments'));
    expect(listed).toEqual([
      {
        paymentId: second.paymentId,
        pack: 'premium',
        priceAmount: '25',
        priceCurrency: 'usd',
        creditsMicro: '27500000',
        status: 'finished',
        actuallyPaid: '0.00041',
        payCurrency: 'btc',
        invoiceUrl: second.invoiceUrl,
        createdAt: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T/),
        updatedAt: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T/),
        mintedAt: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T/),
        refundedMicro: null,
        refundShortfallMicro: null,
      },
      expect.objectContaining({
        paymentId: first.paymentId,
        pack: 'starter',
        creditsMicro: '5000000',
        status: 'waiting',
        mintedAt: null,
      }),
    ]);
    const balance = data<{ availableMicro: string }>(await trpc(harness, member, 'billing.balance'));
    expect(balance.availableMicro).toBe('27500000');
  });
});

describe('billing.usage', () => {
  const tenantPromise = () => createTenant(harness.services, { name: 'Spender', tier: 4 });
  const at = (iso: string) => new Date(iso);
  let spender: string;
  let counter = 0;
  const row = (
    createdAt: string,
    pool: string,
    costMicro: bigint,
    extra: { tenantId?: string; free?: boolean; settled?: boolean } = {},
  ) => {
    counter += 1;
    return {
      reservationId: `res_usage_${counter}`,
      tenantId: extra.tenantId ?? spender,
      keyId: 'key_usage',
      pool,
      promptTokens: 10,
      completionTokens: 20,
      costMicro,
      free: extra.free ?? false,
      settled: extra.settled ?? true,
      createdAt: at(createdAt),
      settledAt: extra.settled === false ? null : at(createdAt),
    };
  };

  beforeAll(async () => {
    spender = (await tenantPromise()).id;
    await harness.db.insert(spend).values([
      // 2026-03-01: cheap 2 requests (100 + 250), standard 1 (1,000).
      row('2026-03-01T00:00:00.000Z', 'cheap', 100n),
      row('2026-03-01T23:59:59.999Z', 'cheap', 250n),
      row('2026-03-01T12:00:00.000Z', 'standard', 1_000n),
      // 2026-03-02: cheap 1 (7), standard 2 (3,000 + 4,500).
      row('2026-03-02T00:00:00.000Z', 'cheap', 7n),
      row('2026-03-02T08:30:00.000Z', 'standard', 3_000n),
      row('2026-03-02T20:15:00.000Z', 'standard', 4_500n),
      // Not charged, or not this tenant, or outside the window: never counted.
      row('2026-03-01T10:00:00.000Z', 'cheap', 999_999n, { free: true }),
      row('2026-03-02T10:00:00.000Z', 'standard', 888_888n, { settled: false }),
      row('2026-03-02T10:00:00.000Z', 'standard', 777_777n, { tenantId: tenantA }),
      row('2026-02-28T23:59:59.999Z', 'cheap', 666_666n),
      row('2026-03-03T00:00:00.000Z', 'cheap', 555_555n),
    ]);
  });

  it('sums charged spend per pool per UTC day, `to` exclusive, with exact totals', async () => {
    const result = await trpc(harness, tokens.admin, 'billing.usage', {
      tenantId: spender,
      from: '2026-03-01',
      to: '2026-03-03',
    });
    expect(result.status).toBe(200);
    const { tenantId, from, to, days, pools, requests, totalMicro } = data<Record<string, unknown>>(result);
    expect({ tenantId, from, to, days, pools, requests, totalMicro }).toEqual({
      tenantId: spender,
      from: '2026-03-01T00:00:00.000Z',
      to: '2026-03-03T00:00:00.000Z',
      days: [
        { date: '2026-03-01', pool: 'cheap', requests: 2, costMicro: '350' },
        { date: '2026-03-01', pool: 'standard', requests: 1, costMicro: '1000' },
        { date: '2026-03-02', pool: 'cheap', requests: 1, costMicro: '7' },
        { date: '2026-03-02', pool: 'standard', requests: 2, costMicro: '7500' },
      ],
      pools: [
        { pool: 'cheap', requests: 3, costMicro: '357' },
        { pool: 'standard', requests: 3, costMicro: '8500' },
      ],
      requests: 6,
      totalMicro: '8857',
    });
  });

  it('takes date-times with a zone: a window inside one day counts only that part of it', async () => {
    const result = await trpc(harness, tokens.admin, 'billing.usage', {
      tenantId: spender,
      from: '2026-03-02T09:00:00+01:00',
      to: '2026-03-02T21:00:00Z',
    });
    expect(data(result)).toMatchObject({
      from: '2026-03-02T08:00:00.000Z',
      days: [{ date: '2026-03-02', pool: 'standard', requests: 2, costMicro: '7500' }],
      totalMicro: '7500',
    });
  });

  it('defaults to the last 30 UTC days, today included', async () => {
    const tenantId = (await tenantPromise()).id;
    const member = (await issueToken(harness.services, { role: 'member', tenantId })).token;
    const now = Date.now();
    await harness.db
      .insert(spend)
      .values([
        row(new Date(now - 60_000).toISOString(), 'cheap', 42n, { tenantId }),
        row(new Date(now - 31 * 86_400_000).toISOString(), 'cheap', 1_000n, { tenantId }),
      ]);
    const usage = data<{ from: string; to: string; totalMicro: string; requests: number }>(
      await trpc(harness, member, 'billing.usage'),
    );
    const tomorrow = Math.floor(now / 86_400_000) * 86_400_000 + 86_400_000;
    expect(usage).toMatchObject({
      to: new Date(tomorrow).toISOString(),
      from: new Date(tomorrow - 30 * 86_400_000).toISOString(),
      totalMicro: '42',
      requests: 1,
    });
  });

  it.each([
    ['from after to', { from: '2026-03-03', to: '2026-03-01' }],
    ['an empty window', { from: '2026-03-01', to: '2026-03-01' }],
    ['more than 366 days', { from: '2025-01-01', to: '2026-01-03' }],
    ['a date past its month', { from: '2026-02-30' }],
    ['a date-time without its zone', { from: '2026-03-01T10:00:00' }],
    ['not a date', { to: 'yesterday' }],
  ])('refuses %s with 400', async (_, window) => {
    const result = await trpc(harness, tokens.admin, 'billing.usage', { tenantId: spender, ...window });
    expect(result.status).toBe(400);
  });

  it('accepts a window of exactly 366 days', async () => {
    const result = await trpc(harness, tokens.admin, 'billing.usage', {
      tenantId: spender,
      from: '2025-03-03',
      to: '2026-03-04',
    });
    expect(result.status).toBe(200);
    expect(data<{ totalMicro: string }>(result).totalMicro).toBe(String(8857 + 666_666 + 555_555));
  });
});
