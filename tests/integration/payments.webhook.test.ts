import { createHmac } from 'node:crypto';
import { and, eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type CryptoPaymentRow,
  creditGrants,
  cryptoPayments,
  journalEntries,
  postings,
  webhookEvents,
} from '../../db/schema/index.js';
import { createKey } from '../../src/keys/keys.js';
import { accountBalance, accounts } from '../../src/ledger/journal.js';
import { ipnReport } from '../../src/payments/ipn.js';
import { canonicalJson } from '../../src/payments/signature.js';
import { applyStatusReport } from '../../src/payments/state-machine.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';
import { insertPayment, ipnBody, postIpn, signBody } from '../support/payments.js';
import { infer, events as sseEvents } from '../support/sse.js';
import { data, trpc } from '../support/trpc.js';

/**
 * POST /api/crypto/webhook on the real database and store: the signature (vectors computed here),
 * every path through the state machine, duplicates under concurrency, and what a refusal costs.
 */
const SECRET = 'ipn-secret-current-0123456789';
const OLD_SECRET = 'ipn-secret-previous-9876543210';

let harness: Harness;

beforeAll(async () => {
  harness = await createHarness({ config: { nowpaymentsIpnSecrets: [SECRET, OLD_SECRET] } });
});
afterAll(async () => {
  await harness.close();
});

async function tenant(): Promise<string> {
  return (await createTenant(harness.services, { name: 'Payer', tier: 4 })).id;
}

async function payment(input: Partial<Parameters<typeof insertPayment>[1]> = {}): Promise<CryptoPaymentRow> {
  return insertPayment(harness.services, { tenantId: await tenant(), ...input });
}

async function send(row: CryptoPaymentRow, status: string, updatedAtMs: number, extra = {}) {
  const body = ipnBody(row, status, updatedAtMs, extra);
  const response = await postIpn(harness, body, signBody(SECRET, body));
  return { status: response.status, body: (await response.json()) as { status?: string; error?: unknown } };
}

async function reload(id: string): Promise<CryptoPaymentRow> {
  const [row] = await harness.db.select().from(cryptoPayments).where(eq(cryptoPayments.id, id));
  if (row === undefined) throw new Error(`payment ${id} vanished`);
  return row;
}

async function events(paymentId: string) {
  return harness.db
    .select()
    .from(webhookEvents)
    .where(eq(webhookEvents.paymentId, paymentId))
    .orderBy(webhookEvents.id);
}

async function mintEntries(paymentId: string) {
  return harness.db
    .select()
    .from(journalEntries)
    .where(and(eq(journalEntries.kind, 'payment'), eq(journalEntries.reference, paymentId)));
}

async function available(tenantId: string): Promise<bigint> {
  const balance = data<{ availableMicro: string }>(
    await trpc(harness, harness.adminToken, 'billing.balance', { tenantId }),
  );
  return BigInt(balance.availableMicro);
}

async function allEventCount(): Promise<number> {
  return (await harness.db.select({ id: webhookEvents.id }).from(webhookEvents)).length;
}

describe('the IPN signature', () => {
  // A body with a nested fee object, non-ASCII text, integers, decimals and nulls, and its
  // canonical form written out by hand: keys sorted at every level, JSON.stringify's spelling.
  const body = {
    payment_status: 'finished',
    order_description: 'Crédits — 支払い ✓',
    payment_id: 4_411_226_733,
    fee: { withdrawalFee: 0.0001, currency: 'eth', serviceFee: 0, depositFee: null },
    actually_paid: 0.0042,
    purchase_id: null,
    updated_at: 1_764_000_000_000,
  };
  const canonical =
    '{"actually_paid":0.0042,"fee":{"currency":"eth","depositFee":null,"serviceFee":0,"withdrawalFee":0.0001},' +
    '"order_description":"Crédits — 支払い ✓","payment_id":4411226733,"payment_status":"finished",' +
    '"purchase_id":null,"updated_at":1764000000000}';
  const golden = createHmac('sha512', SECRET).update(canonical, 'utf8').digest('hex');

  it('signs the recursively key-sorted JSON: the golden vector computed by hand matches', () => {
    expect(canonicalJson(body)).toBe(canonical);
    expect(signBody(SECRET, body)).toBe(golden);
  });

  it('accepts the golden signature over HTTP, also with the body keys in another order', async () => {
    // No order id we know: the signature is good, the payment is not ours → ignored, not 401.
    expect((await postIpn(harness, body, golden)).status).toBe(200);
    const reordered = Object.fromEntries(Object.entries(body).reverse());
    expect(JSON.stringify(reordered)).not.toBe(JSON.stringify(body));
    const response = await postIpn(harness, reordered, golden.toUpperCase());
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ status: 'duplicate' });
  });

  it('refuses a tampered amount, a tampered nested value, a missing or malformed header with 401 and writes nothing', async () => {
    const before = await allEventCount();
    const cases: [Record<string, unknown>, string | undefined][] = [
      [{ ...body, actually_paid: 0.0043 }, golden],
      [{ ...body, fee: { ...body.fee, serviceFee: 1 } }, golden],
      [body, undefined],
      [body, golden.slice(0, 127)],
      [body, `${golden.slice(0, 127)}g`],
      [body, ''],
    ];
    for (const [tampered, signature] of cases) {
      const response = await postIpn(harness, tampered, signature);
      expect(response.status).toBe(401);
      const answer = (await response.json()) as { error: { code: string; requestId: string } };
      expect(answer.error.code).toBe('unauthorized');
      expect(answer.error.requestId).toEqual(expect.any(String));
    }
    expect(await allEventCount()).toBe(before);
  });

  it('accepts the old secret during a rotation and refuses it once the rotation ends', async () => {
    const row = await payment();
    const first = ipnBody(row, 'waiting', 1_000);
    expect((await postIpn(harness, first, signBody(OLD_SECRET, first))).status).toBe(200);
    const after = await createHarness({ shareWith: harness, config: { nowpaymentsIpnSecrets: [SECRET] } });
    try {
      const next = ipnBody(row, 'confirming', 2_000);
      expect((await postIpn(after, next, signBody(OLD_SECRET, next))).status).toBe(401);
      expect((await postIpn(after, next, signBody(SECRET, next))).status).toBe(200);
    } finally {
      await after.close();
    }
    expect((await reload(row.id)).status).toBe('confirming');
  });
});

describe('the payment state machine', () => {
  it('waiting → confirming → confirmed → sending → finished mints the pack once, with its payment entry', async () => {
    const row = await payment({ pack: 'standard' });
    const statuses = ['waiting', 'confirming', 'confirmed', 'sending', 'finished'];
    for (const [index, status] of statuses.entries()) {
      expect(await send(row, status, 1_000 + index)).toEqual({ status: 200, body: { status: 'processed' } });
    }
    const done = await reload(row.id);
    expect(done.status).toBe('finished');
    expect(done.statusRank).toBe(4);
    expect(done.mintedAt).not.toBeNull();
    expect(done.engineCreditedAt).not.toBeNull();
    expect(done.actuallyPaid).toBe('0.0042');
    const [entry] = await mintEntries(row.id);
    expect(done.mintEntryId).toBe(entry?.id);
    const lines = await harness.db
      .select({ account: postings.account, amountMicro: postings.amountMicro })
      .from(postings)
      .where(eq(postings.entryId, entry?.id ?? -1n));
    expect(lines).toEqual(
      expect.arrayContaining([
        { account: accounts.available(row.tenantId), amountMicro: 10_500_000n },
        { account: accounts.paymentsReceived, amountMicro: -10_500_000n },
      ]),
    );
    expect(await available(row.tenantId)).toBe(10_500_000n);
    expect((await events(row.id)).map((event) => event.outcome)).toEqual(statuses.map(() => 'processed'));
  });

  it('waiting → expired and confirmed → failed end the payment and mint nothing', async () => {
    const expiring = await payment();
    await send(expiring, 'waiting', 1_000);
    expect((await send(expiring, 'expired', 2_000)).body).toEqual({ status: 'processed' });
    expect((await send(expiring, 'finished', 3_000)).body).toEqual({ status: 'ignored' });
    const failing = await payment();
    await send(failing, 'confirmed', 1_000);
    expect((await send(failing, 'failed', 2_000)).body).toEqual({ status: 'processed' });
    for (const row of [expiring, failing]) {
      const after = await reload(row.id);
      expect(after.mintedAt).toBeNull();
      expect(await mintEntries(row.id)).toEqual([]);
      expect(await available(row.tenantId)).toBe(0n);
    }
    expect((await reload(expiring.id)).status).toBe('expired');
    expect((await reload(failing.id)).status).toBe('failed');
    expect((await events(expiring.id)).at(-1)?.reason).toBe('after_terminal');
  });

  it('finished then waiting stays finished; a repeated finished with a newer updated_at is recorded, not re-minted', async () => {
    const row = await payment();
    await send(row, 'finished', 5_000);
    expect((await send(row, 'waiting', 6_000)).body).toEqual({ status: 'ignored' });
    expect((await send(row, 'finished', 7_000)).body).toEqual({ status: 'ignored' });
    expect((await reload(row.id)).status).toBe('finished');
    expect(await mintEntries(row.id)).toHaveLength(1);
    expect(await available(row.tenantId)).toBe(10_500_000n);
    const recorded = await events(row.id);
    expect(recorded.map((event) => [event.status, event.outcome, event.reason])).toEqual([
      ['finished', 'processed', null],
      ['waiting', 'ignored', 'after_finished'],
      ['finished', 'ignored', 'after_finished'],
    ]);
  });

  it('applies the same status again when newer, and ignores a backward or a stale report', async () => {
    const row = await payment();
    await send(row, 'confirmed', 2_000);
    expect((await send(row, 'confirmed', 3_000)).body).toEqual({ status: 'processed' });
    expect((await reload(row.id)).lastIpnUpdatedAt).toBe(3_000);
    expect((await send(row, 'confirming', 4_000)).body).toEqual({ status: 'ignored' });
    expect((await send(row, 'sending', 2_500)).body).toEqual({ status: 'ignored' });
    const after = await reload(row.id);
    expect(after.status).toBe('confirmed');
    expect(after.lastIpnUpdatedAt).toBe(3_000);
    expect((await events(row.id)).map((event) => event.reason)).toEqual([null, null, 'backward', 'stale']);
  });

  it('partially_paid never mints and is logged for the operator', async () => {
    const row = await payment();
    expect((await send(row, 'partially_paid', 1_000)).body).toEqual({ status: 'processed' });
    const after = await reload(row.id);
    expect([after.status, after.mintedAt]).toEqual(['partially_paid', null]);
    expect(await available(row.tenantId)).toBe(0n);
    expect(
      harness.logs.some((line) => line.msg?.includes('partially paid') && line.paymentId === row.id),
    ).toBe(true);
  });

  it('finished → refunded writes the compensating refund entry; the book takes back only what is available', async () => {
    const row = await payment({ pack: 'starter' });
    await send(row, 'finished', 1_000);
    expect((await send(row, 'refunded', 2_000)).body).toEqual({ status: 'processed' });
    const after = await reload(row.id);
    expect([after.status, after.refundedMicro, after.refundShortfallMicro]).toEqual([
      'refunded',
      5_000_000n,
      0n,
    ]);
    const [refund] = await harness.db
      .select()
      .from(journalEntries)
      .where(and(eq(journalEntries.kind, 'refund'), eq(journalEntries.reference, row.id)));
    expect(refund).toBeDefined();
    expect(await accountBalance(harness.db, accounts.available(row.tenantId))).toBe(0n);

    // Credits already spent: the book takes back what is left and records the rest as the shortfall.
    const spent = await payment({ pack: 'starter' });
    await send(spent, 'finished', 1_000);
    await harness.db.transaction(async (tx) => {
      const [entry] = await tx
        .insert(journalEntries)
        .values({ tenantId: spent.tenantId, kind: 'adjustment', reference: `test-spend-${spent.id}` })
        .returning({ id: journalEntries.id });
      await tx.insert(postings).values([
        { entryId: entry?.id ?? -1n, account: accounts.available(spent.tenantId), amountMicro: -3_000_000n },
        { entryId: entry?.id ?? -1n, account: accounts.spent(spent.tenantId), amountMicro: 3_000_000n },
      ]);
    });
    await send(spent, 'refunded', 2_000);
    const short = await reload(spent.id);
    expect([short.refundedMicro, short.refundShortfallMicro]).toEqual([2_000_000n, 3_000_000n]);
    expect(await accountBalance(harness.db, accounts.available(spent.tenantId))).toBe(0n);
    expect(harness.logs.some((line) => line.msg?.includes('shortfall') && line.paymentId === spent.id)).toBe(
      true,
    );
    const metric = await harness.services.metrics.refundShortfallMicro.get();
    expect(metric.values[0]?.value).toBe(3_000_000);
  });

  it('two refunds of one tenant at once take back together no more than it has not spent', async () => {
    const tenantId = await tenant();
    const first = await insertPayment(harness.services, { tenantId, pack: 'starter' });
    const second = await insertPayment(harness.services, { tenantId, pack: 'starter' });
    await send(first, 'finished', 1_000);
    await send(second, 'finished', 1_000);
    // 6,000,000 of the 10,000,000 minted spent (written to the book as a spend would be).
    await harness.db.transaction(async (tx) => {
      const [entry] = await tx
        .insert(journalEntries)
        .values({ tenantId, kind: 'adjustment', reference: `test-spend-${tenantId}` })
        .returning({ id: journalEntries.id });
      await tx.insert(postings).values([
        { entryId: entry?.id ?? -1n, account: accounts.available(tenantId), amountMicro: -6_000_000n },
        { entryId: entry?.id ?? -1n, account: accounts.spent(tenantId), amountMicro: 6_000_000n },
      ]);
    });
    // Both refunds inside their transactions at once: each waits (up to 1 s) for the other to reach
    // its commit too, so two that read the balance side by side commit side by side.
    let arrived = 0;
    let releaseAll: () => void = () => {};
    const together = new Promise<void>((resolve) => {
      releaseAll = resolve;
    });
    const refund = (row: CryptoPaymentRow) => {
      const parsed = ipnReport(ipnBody(row, 'refunded', 2_000));
      if ('error' in parsed) throw new Error(parsed.error);
      return applyStatusReport(harness.services, parsed.report, {
        beforeCommit: async () => {
          arrived += 1;
          if (arrived === 2) releaseAll();
          await Promise.race([together, new Promise((resolve) => setTimeout(resolve, 1_000))]);
        },
      });
    };
    const answers = await Promise.all([refund(first), refund(second)]);
    expect(answers.map((answer) => answer.status)).toEqual(['processed', 'processed']);
    const rows = [await reload(first.id), await reload(second.id)];
    const taken = rows.reduce((total, row) => total + (row.refundedMicro ?? 0n), 0n);
    const short = rows.reduce((total, row) => total + (row.refundShortfallMicro ?? 0n), 0n);
    expect([taken, short]).toEqual([4_000_000n, 6_000_000n]);
    expect(await accountBalance(harness.db, accounts.available(tenantId))).toBe(0n);
  });

  it.each([
    ['this instance', false],
    ['another instance', true],
  ])(
    'a refund right after inferences on %s counts their charges before PostgreSQL has them',
    async (_, elsewhere) => {
      const row = await payment({ pack: 'starter' });
      await send(row, 'finished', 1_000);
      const { key } = await createKey(harness.services, row.tenantId, { name: 'refund-lag' });
      // Another gateway's settled rows are in its memory and the store's outbox, not in the book.
      const other = elsewhere
        ? await createHarness({ shareWith: harness, config: harness.services.config })
        : harness;
      let spent = 0n;
      for (let i = 0; i < 3; i += 1) {
        const response = await infer(other, key, { prompt: 'spend a little', max_tokens: 8 });
        spent += BigInt(sseEvents(await response.text()).at(-1)?.cost_micro ?? '0');
      }
      expect(spent).toBeGreaterThan(0n);
      // The settled rows are still held (written within 1 s): refund at once.
      await send(row, 'refunded', 2_000);
      if (elsewhere) await other.close();
      const after = await reload(row.id);
      expect([after.refundedMicro, after.refundShortfallMicro]).toEqual([5_000_000n - spent, spent]);
      expect(await available(row.tenantId)).toBe(0n);
    },
  );

  it('matches a report by invoice id when it carries no order id, and ignores a payment it does not know', async () => {
    const row = await payment();
    const body = ipnBody(row, 'confirming', 1_000);
    delete body.order_id;
    expect(await (await postIpn(harness, body, signBody(SECRET, body))).json()).toEqual({
      status: 'processed',
    });
    expect((await reload(row.id)).status).toBe('confirming');
    const stranger = ipnBody({ id: 'pay_notours', providerInvoiceId: '1' }, 'finished', 1_000);
    expect(await (await postIpn(harness, stranger, signBody(SECRET, stranger))).json()).toEqual({
      status: 'ignored',
    });
  });

  it('the same signed finished IPN 100 times at once mints exactly once: one grant, one entry, 99 duplicates', async () => {
    const row = await payment({ pack: 'premium' });
    const body = ipnBody(row, 'finished', 9_000);
    const signature = signBody(SECRET, body);
    const answers = await Promise.all(
      Array.from({ length: 100 }, async () => (await postIpn(harness, body, signature)).json()),
    );
    const counts = answers.reduce<Record<string, number>>((tally, answer) => {
      const status = (answer as { status: string }).status;
      tally[status] = (tally[status] ?? 0) + 1;
      return tally;
    }, {});
    expect(counts).toEqual({ processed: 1, duplicate: 99 });
    expect(await mintEntries(row.id)).toHaveLength(1);
    const grants = await harness.db.select().from(creditGrants).where(eq(creditGrants.id, row.id));
    expect(grants.map((grant) => grant.amountMicro)).toEqual([27_500_000n]);
    const recorded = await events(row.id);
    expect(recorded.filter((event) => event.outcome === 'duplicate')).toHaveLength(99);
    expect(recorded.filter((event) => event.outcome === 'processed')).toHaveLength(1);
    expect(
      harness.logs.filter((line) => line.msg === 'payment credited' && line.paymentId === row.id),
    ).toHaveLength(1);
    expect(await available(row.tenantId)).toBe(27_500_000n);
  });
});

describe('refusals', () => {
  it('answers 400 for a body that is not JSON, names no payment, or has no status — nothing recorded', async () => {
    const before = await allEventCount();
    expect((await postIpn(harness, '{"payment_status":', 'ab')).status).toBe(400);
    const anonymous = { payment_status: 'finished' };
    expect((await postIpn(harness, anonymous, signBody(SECRET, anonymous))).status).toBe(400);
    const row = await payment();
    const statusless = ipnBody(row, 'finished', 1);
    delete statusless.payment_status;
    const response = await postIpn(harness, statusless, signBody(SECRET, statusless));
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('invalid_request');
    expect(await allEventCount()).toBe(before);
  });

  it('answers 400 before any signature work for a body nested too deeply (not a 500)', async () => {
    const before = await allEventCount();
    const deep = `{"order_id":"pay_deep","payment_status":"finished","a":${'['.repeat(50_000)}${']'.repeat(50_000)}}`;
    const response = await postIpn(harness, deep, 'a'.repeat(128));
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('invalid_request');
    expect(await allEventCount()).toBe(before);
  });

  it('reads updated_at as milliseconds, their digits, or an ISO date, and orders reports by it', async () => {
    const row = await payment();
    const at = (iso: string) => ({ updated_at: iso });
    const sendWith = async (status: string, extra: Record<string, unknown>) => {
      const body = { ...ipnBody(row, status, 0), ...extra };
      return (await postIpn(harness, body, signBody(SECRET, body))).json();
    };
    expect(await sendWith('waiting', at('2026-12-01T10:00:00.000Z'))).toEqual({ status: 'processed' });
    expect((await reload(row.id)).lastIpnUpdatedAt).toBe(Date.parse('2026-12-01T10:00:00.000Z'));
    expect(
      await sendWith('confirming', { updated_at: String(Date.parse('2026-12-01T09:00:00.000Z')) }),
    ).toEqual({
      status: 'ignored',
    });
    expect(await sendWith('confirming', { updated_at: Date.parse('2026-12-01T11:00:00.000Z') })).toEqual({
      status: 'processed',
    });
    const bad = await postIpn(
      harness,
      { ...ipnBody(row, 'confirmed', 0), updated_at: 'yesterday' },
      undefined,
    );
    expect(bad.status).toBe(401);
    const unsignedBad = { ...ipnBody(row, 'confirmed', 0), updated_at: '99999999999999999' };
    const refused = await postIpn(harness, unsignedBad, signBody(SECRET, unsignedBad));
    expect(refused.status).toBe(400);
  });

  it('answers 503 feature_disabled with Retry-After while PAYMENTS=off, and when no IPN secret is set', async () => {
    const row = await payment();
    const body = ipnBody(row, 'finished', 1_000);
    for (const config of [{ payments: 'off' as const }, { nowpaymentsIpnSecrets: [] }]) {
      const off = await createHarness({
        shareWith: harness,
        config: { ...harness.services.config, ...config },
      });
      try {
        const response = await postIpn(off, body, signBody(SECRET, body));
        expect(response.status).toBe(503);
        expect(response.headers.get('retry-after')).toMatch(/^\d+$/);
        expect(((await response.json()) as { error: { code: string } }).error.code).toBe('feature_disabled');
      } finally {
        await off.close();
      }
    }
    expect((await reload(row.id)).status).toBe('waiting');
  });
});
