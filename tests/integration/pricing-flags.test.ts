import { eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cryptoPayments, featureFlags, poolPrices } from '../../db/schema/index.js';
import { estimate } from '../../src/inference/estimate.js';
import { createKey } from '../../src/keys/keys.js';
import { costAt, DEFAULT_PRICES } from '../../src/pricing/pricing.js';
import { issueCallerToken } from '../../src/signing/tokens.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';
import { insertPayment, ipnBody, postIpn, signBody } from '../support/payments.js';
import { events, infer } from '../support/sse.js';
import { data, trpc } from '../support/trpc.js';

/**
 * Runtime pricing and feature flags (admin.pricing, admin.flags): two gateway instances on one
 * database and one Redis. A change made through instance A is applied by instance B, whose copies
 * poll the change counters as in production; B is polled for at most 5 s, and the behaviour is
 * asserted, not the time.
 */
const SECRET = 'ipn-secret-pricing-flags-0123';
// The provider's API is never reached here: nothing listens on port 9.
const config = {
  localModelTokens: 4,
  nowpaymentsIpnSecrets: [SECRET],
  nowpaymentsApiKey: 'test-api-key',
  nowpaymentsApiUrl: 'http://127.0.0.1:9/v1',
  nowpaymentsTimeoutMs: 300,
};
const PROMPT = 'abcd';

let a: Harness;
let b: Harness;
let operator: string;

beforeAll(async () => {
  a = await createHarness({ config });
  b = await createHarness({ shareWith: a, config });
  b.services.prices.start();
  b.services.flags.start();
  operator = (await issueCallerToken(a.services, { role: 'operator', subject: 'op', ttlSeconds: 600 })).token;
});
afterAll(async () => {
  await b?.close();
  await a?.close();
});
// Every test leaves no price or flag behind (they are global to the file's database).
afterEach(async () => {
  await a.db.delete(poolPrices);
  await a.db.delete(featureFlags);
  await a.services.prices.changed();
  await a.services.flags.changed();
});

async function tenantWithKey(creditMicro = 1_000_000_000n) {
  const tenantId = (await createTenant(a.services, { name: 'Priced', tier: 8 })).id;
  await a.services.store.credit({ tenantId, grantId: 'g', amountMicro: creditMicro });
  const { id, key } = await createKey(a.services, tenantId, { name: 'k', rpmLimit: 1_000 });
  return { tenantId, keyId: id, key };
}

const admin = (path: string, input: unknown) => trpc(a, a.adminToken, path, input, 'POST');

async function native(on: Harness, key: string) {
  const response = await infer(on, key, { prompt: PROMPT, max_tokens: 4, pool: 'standard' });
  const text = await response.text();
  if (response.headers.get('content-type')?.includes('json')) {
    return {
      status: response.status,
      headers: response.headers,
      error: JSON.parse(text).error,
      done: undefined,
    };
  }
  return { status: response.status, headers: response.headers, error: undefined, done: events(text).at(-1) };
}

function openAi(on: Harness, key: string) {
  return on.request('/v1/chat/completions', {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'standard', messages: [{ role: 'user', content: PROMPT }], max_tokens: 4 }),
  });
}

/** What the native route charged, and what it should have at `price` for the tokens it reported. */
async function charged(on: Harness, key: string, price: bigint) {
  const answer = await native(on, key);
  expect(answer.status).toBe(200);
  expect(answer.done?.type).toBe('done');
  const tokens = answer.done?.usage?.total_tokens ?? 0;
  expect(tokens).toBeGreaterThan(0);
  return { costMicro: answer.done?.cost_micro, atPrice: costAt(price, tokens).toString() };
}

/** Calls `probe` every 100 ms until `done` holds or 5 s have passed; the last answer either way. */
async function within5s<T>(probe: () => Promise<T>, done: (value: T) => boolean): Promise<T> {
  const since = Date.now();
  let value = await probe();
  while (!done(value) && Date.now() - since < 5_000) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    value = await probe();
  }
  return value;
}

describe('runtime pricing', () => {
  it('a global price set through instance A is charged by instance B within 5 s', async () => {
    const { key } = await tenantWithKey();
    const before = await charged(b, key, DEFAULT_PRICES.standard);
    expect(before.costMicro).toBe(before.atPrice);

    expect((await admin('admin.pricing.set', { pool: 'standard', microPer1kTokens: '7000000' })).status).toBe(
      200,
    );
    const after = await within5s(
      () => charged(b, key, 7_000_000n),
      (result) => result.costMicro === result.atPrice,
    );
    expect(after.costMicro).toBe(after.atPrice);
    expect(BigInt(after.costMicro ?? 0)).toBeGreaterThan(BigInt(before.costMicro ?? 0) * 1_000n);
  });

  it('the next request on the instance that changed it reserves at the new price (402 once it cannot)', async () => {
    const newPrice = 1_000_000n;
    const oldReservation = estimate('standard', PROMPT, 4, DEFAULT_PRICES).costMicro;
    const newReservation = estimate('standard', PROMPT, 4, {
      ...DEFAULT_PRICES,
      standard: newPrice,
    }).costMicro;
    // Enough for many requests at the default price, not for one reservation at the new one.
    const credit = oldReservation * 100n;
    expect(newReservation).toBeGreaterThan(credit);
    const { key } = await tenantWithKey(credit);
    expect((await native(a, key)).status).toBe(200);

    await admin('admin.pricing.set', { pool: 'standard', microPer1kTokens: newPrice.toString() });
    const refused = await native(a, key);
    expect(refused.status).toBe(402);
    expect(refused.error).toMatchObject({ code: 'budget_exceeded' });

    await admin('admin.pricing.set', { pool: 'standard', microPer1kTokens: null });
    const back = await charged(a, key, DEFAULT_PRICES.standard);
    expect(back.costMicro).toBe(back.atPrice);
  });

  it('a tenant’s own price beats the global one, for that tenant only; cleared, it follows the global one', async () => {
    const own = await tenantWithKey();
    const other = await tenantWithKey();
    await admin('admin.pricing.set', { pool: 'standard', microPer1kTokens: '3000' });
    await admin('admin.pricing.set', { pool: 'standard', microPer1kTokens: '50000', tenantId: own.tenantId });

    const ownCharge = await charged(a, own.key, 50_000n);
    expect(ownCharge.costMicro).toBe(ownCharge.atPrice);
    const otherCharge = await charged(a, other.key, 3_000n);
    expect(otherCharge.costMicro).toBe(otherCharge.atPrice);

    const cleared = await admin('admin.pricing.set', {
      pool: 'standard',
      microPer1kTokens: null,
      tenantId: own.tenantId,
    });
    expect(data(cleared)).toEqual({
      pool: 'standard',
      tenantId: own.tenantId,
      microPer1kTokens: null,
      previousMicroPer1kTokens: '50000',
    });
    const followed = await charged(a, own.key, 3_000n);
    expect(followed.costMicro).toBe(followed.atPrice);
  });

  it('admin.pricing.get shows each pool’s price, where it comes from, its default, and the overrides', async () => {
    const { tenantId } = await tenantWithKey();
    await admin('admin.pricing.set', { pool: 'reasoning', microPer1kTokens: '4500' });
    await admin('admin.pricing.set', { pool: 'cheap', microPer1kTokens: '150', tenantId });
    const view = data<{
      pools: { pool: string; microPer1kTokens: string; source: string; defaultMicroPer1kTokens: string }[];
      overrides: { tenantId: string; pool: string; microPer1kTokens: string; updatedAt: string }[];
    }>(await trpc(a, operator, 'admin.pricing.get'));
    expect(view.pools).toEqual([
      { pool: 'cheap', microPer1kTokens: '200', source: 'default', defaultMicroPer1kTokens: '200' },
      { pool: 'standard', microPer1kTokens: '1000', source: 'default', defaultMicroPer1kTokens: '1000' },
      { pool: 'reasoning', microPer1kTokens: '4500', source: 'runtime', defaultMicroPer1kTokens: '4000' },
      { pool: 'architect', microPer1kTokens: '8000', source: 'default', defaultMicroPer1kTokens: '8000' },
      { pool: 'flagship', microPer1kTokens: '15000', source: 'default', defaultMicroPer1kTokens: '15000' },
    ]);
    expect(view.overrides).toEqual([
      { tenantId, pool: 'cheap', microPer1kTokens: '150', updatedAt: expect.any(String) },
    ]);
  });

  it('refuses bad input with 400 and stores nothing: unknown pool, zero, negative, fractional, numeric, too dear', async () => {
    const bad = [
      { pool: 'gold', microPer1kTokens: '1000' },
      { pool: 'standard', microPer1kTokens: '0' },
      { pool: 'standard', microPer1kTokens: '-5' },
      { pool: 'standard', microPer1kTokens: '1.5' },
      { pool: 'standard', microPer1kTokens: 1000 },
      { pool: 'standard' },
      // The largest request (MAX_BODY_BYTES of prompt) would reserve more than 10^15 µ.
      { pool: 'standard', microPer1kTokens: '1000000000000' },
      { pool: 'standard', microPer1kTokens: '1000', tenantId: 'acme' },
    ];
    for (const input of bad) {
      const result = await admin('admin.pricing.set', input);
      expect(result.status, JSON.stringify(input)).toBe(400);
      expect(result.body.error?.data).toMatchObject({ code: 'BAD_REQUEST' });
    }
    const missingTenant = await admin('admin.pricing.set', {
      pool: 'standard',
      microPer1kTokens: '1000',
      tenantId: `ten_${'0'.repeat(32)}`,
    });
    expect(missingTenant.status).toBe(404);
    expect(await a.db.select().from(poolPrices)).toEqual([]);
  });
});

describe('feature flags', () => {
  it('inference switched off through A: B answers 503 feature_disabled naming the flag on both routes; back on, 200', async () => {
    const { key } = await tenantWithKey();
    expect((await native(b, key)).status).toBe(200);

    await admin('admin.flags.set', { flag: 'inference', enabled: false });
    const off = await within5s(
      () => native(b, key),
      (answer) => answer.status === 503,
    );
    expect(off.status).toBe(503);
    expect(off.error).toMatchObject({ code: 'feature_disabled', flag: 'inference' });
    expect(off.headers.get('retry-after')).toMatch(/^\d+$/);
    const chat = await openAi(b, key);
    expect(chat.status).toBe(503);
    expect(chat.headers.get('retry-after')).toMatch(/^\d+$/);
    const chatError = ((await chat.json()) as { error: { code: string; message: string } }).error;
    expect(chatError.code).toBe('feature_disabled');
    expect(chatError.message).toContain('inference');

    await admin('admin.flags.set', { flag: 'inference', enabled: true });
    const on = await within5s(
      () => native(b, key),
      (answer) => answer.status === 200,
    );
    expect(on.status).toBe(200);
    expect((await openAi(b, key)).status).toBe(200);
  });

  it('a tenant’s own flag beats the global one, both ways', async () => {
    const own = await tenantWithKey();
    const other = await tenantWithKey();
    await admin('admin.flags.set', { flag: 'inference', enabled: false, tenantId: own.tenantId });
    expect((await native(a, own.key)).error).toMatchObject({ code: 'feature_disabled', flag: 'inference' });
    expect((await native(a, other.key)).status).toBe(200);

    await admin('admin.flags.set', { flag: 'inference', enabled: false });
    await admin('admin.flags.set', { flag: 'inference', enabled: true, tenantId: own.tenantId });
    expect((await native(a, own.key)).status).toBe(200);
    expect((await native(a, other.key)).status).toBe(503);

    const view = data<{ flags: unknown[]; overrides: unknown[] }>(await trpc(a, operator, 'admin.flags.get'));
    expect(view.flags).toEqual([
      { flag: 'payments', enabled: true, source: 'default' },
      { flag: 'inference', enabled: false, source: 'runtime' },
      { flag: 'keys', enabled: true, source: 'default' },
    ]);
    expect(view.overrides).toEqual([
      { tenantId: own.tenantId, flag: 'inference', enabled: true, updatedAt: expect.any(String) },
    ]);
  });

  it('payments switched off through A: B’s webhook answers 503 feature_disabled; back on, it processes', async () => {
    const { tenantId } = await tenantWithKey();
    const row = await insertPayment(a.services, { tenantId });
    const body = ipnBody(row, 'waiting', a.services.clock.now());
    await admin('admin.flags.set', { flag: 'payments', enabled: false });
    const off = await within5s(
      () => postIpn(b, body, signBody(SECRET, body)),
      (response) => response.status === 503,
    );
    expect(off.status).toBe(503);
    expect(off.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(((await off.json()) as { error: unknown }).error).toMatchObject({
      code: 'feature_disabled',
      flag: 'payments',
    });

    await admin('admin.flags.set', { flag: 'payments', enabled: null });
    const on = await within5s(
      () => postIpn(b, body, signBody(SECRET, body)),
      (response) => response.status !== 503,
    );
    expect(on.status).toBe(200);
  });

  it('payments off for one tenant refuses its invoices (503 feature_disabled) before any row is written', async () => {
    const { tenantId } = await tenantWithKey();
    await admin('admin.flags.set', { flag: 'payments', enabled: false, tenantId });
    const refused = await admin('billing.createInvoice', { tenantId, pack: 'starter' });
    expect(refused.status).toBe(503);
    expect(refused.body.error?.data).toMatchObject({ appCode: 'feature_disabled', flag: 'payments' });
    const rows = () => a.db.select().from(cryptoPayments).where(eq(cryptoPayments.tenantId, tenantId));
    expect(await rows()).toEqual([]);

    // Cleared: the invoice gets as far as the provider (unreachable here).
    await admin('admin.flags.set', { flag: 'payments', enabled: null, tenantId });
    const tried = await admin('billing.createInvoice', { tenantId, pack: 'starter' });
    expect(tried.body.error?.data).toMatchObject({ appCode: 'provider_unavailable' });
  });

  it('keys off for a tenant refuses keys.create and keys.rotate (503 feature_disabled); revoking still works', async () => {
    const { tenantId, keyId } = await tenantWithKey();
    const member = (
      await issueCallerToken(a.services, { role: 'member', tenantId, subject: 'dev', ttlSeconds: 600 })
    ).token;
    await admin('admin.flags.set', { flag: 'keys', enabled: false, tenantId });

    const created = await trpc(a, member, 'keys.create', { name: 'new' }, 'POST');
    expect(created.status).toBe(503);
    expect(created.body.error?.data).toMatchObject({ appCode: 'feature_disabled', flag: 'keys' });
    // An admin naming only the key is held to its tenant's flag too.
    const rotated = await trpc(a, a.adminToken, 'keys.rotate', { id: keyId }, 'POST');
    expect(rotated.status).toBe(503);
    expect(rotated.body.error?.data).toMatchObject({ appCode: 'feature_disabled', flag: 'keys' });
    expect((await trpc(a, member, 'keys.list')).status).toBe(200);
    expect((await trpc(a, member, 'keys.revoke', { id: keyId }, 'POST')).status).toBe(200);

    await admin('admin.flags.set', { flag: 'keys', enabled: null, tenantId });
    expect((await trpc(a, member, 'keys.create', { name: 'new' }, 'POST')).status).toBe(200);
  });

  it('refuses bad input with 400 and stores nothing: unknown flag, non-boolean, missing enabled', async () => {
    for (const input of [
      { flag: 'billing', enabled: false },
      { flag: 'inference', enabled: 'false' },
      { flag: 'inference' },
      { flag: 'inference', enabled: false, tenantId: 'acme' },
    ]) {
      const result = await admin('admin.flags.set', input);
      expect(result.status, JSON.stringify(input)).toBe(400);
    }
    const missingTenant = await admin('admin.flags.set', {
      flag: 'inference',
      enabled: false,
      tenantId: `ten_${'0'.repeat(32)}`,
    });
    expect(missingTenant.status).toBe(404);
    expect(await a.db.select().from(featureFlags)).toEqual([]);
  });
});

describe('roles', () => {
  it('member: FORBIDDEN on every admin.pricing and admin.flags call; operator reads but cannot set; admin sets', async () => {
    const { tenantId } = await tenantWithKey();
    const member = (
      await issueCallerToken(a.services, { role: 'member', tenantId, subject: 'dev', ttlSeconds: 600 })
    ).token;
    const price = { pool: 'cheap', microPer1kTokens: '300' };
    const flag = { flag: 'keys', enabled: false };
    for (const [path, input, method] of [
      ['admin.pricing.get', undefined, 'GET'],
      ['admin.flags.get', undefined, 'GET'],
      ['admin.pricing.set', price, 'POST'],
      ['admin.flags.set', flag, 'POST'],
    ] as const) {
      const result = await trpc(a, member, path, input, method);
      expect(result.status, path).toBe(403);
      expect(result.body.error?.data).toMatchObject({ code: 'FORBIDDEN' });
      expect((await trpc(a, undefined, path, input, method)).status, path).toBe(401);
    }
    expect((await trpc(a, operator, 'admin.pricing.get')).status).toBe(200);
    expect((await trpc(a, operator, 'admin.flags.get')).status).toBe(200);
    for (const [path, input] of [
      ['admin.pricing.set', price],
      ['admin.flags.set', flag],
    ] as const) {
      const result = await trpc(a, operator, path, input, 'POST');
      expect(result.status, path).toBe(403);
      expect(result.body.error?.data).toMatchObject({ code: 'FORBIDDEN' });
    }
    expect(await a.db.select().from(poolPrices)).toEqual([]);
    expect(await a.db.select().from(featureFlags)).toEqual([]);

    expect(data(await admin('admin.pricing.set', price))).toMatchObject({
      pool: 'cheap',
      microPer1kTokens: '300',
    });
    expect(data(await admin('admin.flags.set', flag))).toMatchObject({ flag: 'keys', enabled: false });
  });
});
