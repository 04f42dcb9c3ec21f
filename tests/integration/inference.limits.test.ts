import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { estimate } from '../../src/inference/estimate.js';
import { createKey } from '../../src/keys/keys.js';
import { costMicro, DEFAULT_PRICES } from '../../src/pricing/pricing.js';
import { createTenant, updateTenant } from '../../src/tenants/tenants.js';
import { DEFAULT_TIERS } from '../../src/tenants/tiers.js';
import { createHarness, type Harness } from '../support/harness.js';
import { infer as inferRaw } from '../support/sse.js';

/**
 * Every limit the native route enforces, over HTTP: each rate dimension answers 429 naming itself
 * with `remaining: 0`, `Retry-After` and both header spellings; each budget scope answers 402 naming
 * itself — and the credits boundary is exact.
 */
let harness: Harness;

beforeAll(async () => {
  harness = await createHarness({ config: { localModelTokens: 4 } });
});
afterAll(() => harness.close());

async function tenant(tier: number, creditMicro: bigint) {
  const created = await createTenant(harness.services, { name: 'Limits', tier });
  if (creditMicro > 0n) {
    await harness.services.store.credit({ tenantId: created.id, grantId: 'g', amountMicro: creditMicro });
  }
  return created.id;
}

async function infer(key: string, body: Record<string, unknown>) {
  const response = await inferRaw(harness, key, { prompt: 'abcd', max_tokens: 4, pool: 'standard', ...body });
  const text = await response.text();
  return { response, body: response.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text };
}

function expect429(result: Awaited<ReturnType<typeof infer>>, dimension: string, limit: number) {
  expect(result.response.status).toBe(429);
  expect(result.body.error).toMatchObject({ code: 'rate_limited', dimension, limit, remaining: 0 });
  expect(result.body.error.retryAfterMs).toBeGreaterThan(0);
  const headers = result.response.headers;
  expect(Number(headers.get('retry-after'))).toBe(Math.ceil(result.body.error.retryAfterMs / 1000));
  for (const prefix of ['ratelimit', 'x-ratelimit']) {
    expect(headers.get(`${prefix}-limit`)).toBe(String(limit));
    expect(headers.get(`${prefix}-remaining`)).toBe('0');
    expect(Number(headers.get(`${prefix}-reset`))).toBeGreaterThan(0);
  }
}

describe('429 per rate dimension', () => {
  it('tenant: the 61st request in a minute on a free tier (distinct users, so no burst bucket binds)', async () => {
    const tenantId = await tenant(2, 1_000_000n);
    const { key } = await createKey(harness.services, tenantId, { name: 'k', rpmLimit: 1_000 });
    for (let i = 0; i < 60; i += 1) {
      const ok = await infer(key, { user: `u${i}` });
      expect(ok.response.status).toBe(200);
      // Success responses carry the remaining figures too.
      expect(ok.response.headers.get('ratelimit-remaining')).not.toBeNull();
    }
    expect429(await infer(key, { user: 'u60' }), 'tenant', 60);
  });

  it('channel: the 21st request in a minute on one channel', async () => {
    const tenantId = await tenant(2, 1_000_000n);
    const { key } = await createKey(harness.services, tenantId, { name: 'k', rpmLimit: 1_000 });
    for (let i = 0; i < 20; i += 1)
      expect((await infer(key, { user: `u${i}`, channel: 'c1' })).response.status).toBe(200);
    expect429(await infer(key, { user: 'u20', channel: 'c1' }), 'channel', 20);
    // Another channel is not limited by it.
    expect((await infer(key, { user: 'u21', channel: 'c2' })).response.status).toBe(200);
  });

  it('key_rpm: the key’s own requests per minute', async () => {
    const tenantId = await tenant(8, 1_000_000n);
    const { key } = await createKey(harness.services, tenantId, { name: 'k', rpmLimit: 2 });
    for (let i = 0; i < 2; i += 1) expect((await infer(key, { user: `u${i}` })).response.status).toBe(200);
    expect429(await infer(key, { user: 'u2' }), 'key_rpm', 2);
  });

  it('key_tpd: the key’s tokens per day (admission counts the reservation’s tokens, finalize the actual)', async () => {
    const tenantId = await tenant(8, 1_000_000n);
    // "abcd" + max_tokens 4: admitted at the reservation's upper bound, corrected to 1 + 4 at finalize.
    const reservedTokens = estimate('flagship', 'abcd', 4, DEFAULT_PRICES).maxPromptTokens + 4;
    const actualTokens = 1 + 4;
    // Room for two requests' actual tokens plus one more reservation, less one.
    const tpdLimit = 2 * actualTokens + reservedTokens - 1;
    const { key } = await createKey(harness.services, tenantId, { name: 'k', tpdLimit });
    expect((await infer(key, {})).response.status).toBe(200);
    expect((await infer(key, {})).response.status).toBe(200);
    expect429(await infer(key, {}), 'key_tpd', tpdLimit);
  });
});

describe('402 per budget scope', () => {
  it('balance: credits for exactly two reservations admit two; the third is refused, nothing reserved', async () => {
    // "abcd" + max_tokens 4 at 15 µ per token: reserved at its upper bound, charged 1 + 4 tokens.
    const reserved = estimate('flagship', 'abcd', 4, DEFAULT_PRICES).costMicro;
    const charged = costMicro('flagship', 1 + 4);
    // The first request leaves exactly one reservation's worth available.
    const tenantId = await tenant(8, charged + reserved);
    const { key } = await createKey(harness.services, tenantId, { name: 'k' });
    for (let i = 0; i < 2; i += 1) expect((await infer(key, { pool: 'flagship' })).response.status).toBe(200);
    expect(await harness.services.store.snapshot(tenantId)).toMatchObject({
      availableMicro: reserved - charged,
      reservedMicro: 0n,
    });
    const refused = await infer(key, { pool: 'flagship' });
    expect(refused.response.status).toBe(402);
    expect(refused.body.error).toMatchObject({
      code: 'budget_exceeded',
      scope: 'balance',
      remainingMicro: String(reserved - charged),
    });
    // One micro-credit short of a reservation is refused too.
    const short = await tenant(8, reserved - 1n);
    const { key: shortKey } = await createKey(harness.services, short, { name: 'k' });
    const one = await infer(shortKey, { pool: 'flagship' });
    expect(one.response.status).toBe(402);
    expect(one.body.error).toMatchObject({ scope: 'balance', remainingMicro: String(reserved - 1n) });
  });

  // "abcd" + max_tokens 4 on the standard pool: reserved 28 + 4 µ, charged 1 + 4 µ.
  const reserved = estimate('standard', 'abcd', 4, DEFAULT_PRICES).costMicro;

  it('tenant_monthly: the tenant’s monthly cap', async () => {
    const tenantId = await tenant(8, 1_000_000n);
    await updateTenant(harness.services, { id: tenantId, monthlyCapMicro: String(reserved + 2n) });
    const { key } = await createKey(harness.services, tenantId, { name: 'k' });
    expect((await infer(key, {})).response.status).toBe(200); // 5 µ
    const refused = await infer(key, {});
    expect(refused.response.status).toBe(402);
    expect(refused.body.error).toMatchObject({
      code: 'budget_exceeded',
      scope: 'tenant_monthly',
      remainingMicro: String(reserved + 2n - 5n),
    });
  });

  it('key_monthly: the key’s monthly cap', async () => {
    const tenantId = await tenant(8, 1_000_000n);
    const { key } = await createKey(harness.services, tenantId, {
      name: 'k',
      monthlyCapMicro: String(reserved + 1n),
    });
    expect((await infer(key, {})).response.status).toBe(200); // 5 µ
    const refused = await infer(key, {});
    expect(refused.response.status).toBe(402);
    expect(refused.body.error).toMatchObject({
      code: 'budget_exceeded',
      scope: 'key_monthly',
      remainingMicro: String(reserved + 1n - 5n),
    });
  });
});

describe('configured tiers and prices (TIERS, POOL_PRICES)', () => {
  let configured: Harness;
  beforeAll(async () => {
    configured = await createHarness({
      config: {
        localModelTokens: 4,
        // A burst bucket large enough that the user's per-minute limit is the one that binds.
        tiers: DEFAULT_TIERS.map((limits, index) =>
          index === 1 ? { ...limits, burstCapacity: 100 } : limits,
        ),
        prices: { ...DEFAULT_PRICES, standard: 3_000n },
      },
    });
  });
  afterAll(() => configured.close());

  it('user: the 11th request of one user in a minute, charged at the configured price', async () => {
    const created = await createTenant(configured.services, { name: 'Configured', tier: 2 });
    await configured.services.store.credit({ tenantId: created.id, grantId: 'g', amountMicro: 1_000_000n });
    const { key } = await createKey(configured.services, created.id, { name: 'k', rpmLimit: 1_000 });
    const ask = async () => {
      const response = await configured.request('/api/v1/inference', {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: 'abcd', max_tokens: 4, pool: 'standard', user: 'one' }),
      });
      const text = await response.text();
      return {
        response,
        body: response.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text,
      };
    };
    for (let i = 0; i < 10; i += 1) expect((await ask()).response.status).toBe(200);
    expect429(await ask(), 'user', 10);
    // 10 requests of 1 prompt + 4 completion tokens at 3,000 µ per 1,000 tokens: 15 µ each.
    expect((await configured.services.store.snapshot(created.id)).committedMicro).toBe(
      10n * costMicro('standard', 5, { ...DEFAULT_PRICES, standard: 3_000n }),
    );
    expect(costMicro('standard', 5, { ...DEFAULT_PRICES, standard: 3_000n })).toBe(15n);
  });
});

describe('burst: the bucket caps spikes, not the sustained rate (capacity per tier, refilled as many per second)', () => {
  // The test moves time instead of waiting for it.
  let nowMs = Date.now();
  let timed: Harness;
  beforeAll(async () => {
    timed = await createHarness({ config: { localModelTokens: 4 }, clock: { now: () => nowMs } });
  });
  afterAll(() => timed.close());

  async function keyOfTier(tier: number) {
    const created = await createTenant(timed.services, { name: 'Burst', tier });
    await timed.services.store.credit({ tenantId: created.id, grantId: 'g', amountMicro: 1_000_000n });
    // A key whose own limit is not the one under test.
    return (await createKey(timed.services, created.id, { name: 'k', rpmLimit: 1_000 })).key;
  }

  async function ask(key: string, body: Record<string, unknown> = {}) {
    const response = await inferRaw(timed, key, { prompt: 'abcd', max_tokens: 4, pool: 'standard', ...body });
    const text = await response.text();
    return {
      response,
      body: response.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text,
    };
  }

  it('the 4th request of one user at the same instant on a free tier (capacity 3)', async () => {
    const key = await keyOfTier(2);
    for (let i = 0; i < 3; i += 1) expect((await ask(key, { user: 'same' })).response.status).toBe(200);
    expect429(await ask(key, { user: 'same' }), 'burst', 3);
  });

  it('admits a tier-4 tenant’s 4 requests a second without a user for 30 s (120 requests, all on the tenant-wide bucket)', async () => {
    const key = await keyOfTier(4);
    const statuses: number[] = [];
    for (let i = 0; i < 120; i += 1) {
      statuses.push((await ask(key)).response.status);
      nowMs += 250;
    }
    expect(statuses).toEqual(Array(120).fill(200));
  });

  it('answers 429 burst to the 6th to 10th of a tier-4 tenant’s 10 requests at the same instant, free again 200 ms later', async () => {
    const key = await keyOfTier(4);
    for (let i = 0; i < 5; i += 1) expect((await ask(key)).response.status).toBe(200);
    for (let i = 0; i < 5; i += 1) {
      const refused = await ask(key);
      expect429(refused, 'burst', 5);
      // One request's worth refills in 1/5 s.
      expect(refused.body.error.retryAfterMs).toBe(200);
    }
    nowMs += 200;
    expect((await ask(key)).response.status).toBe(200);
  });
});
