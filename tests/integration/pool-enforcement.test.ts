import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { poolDecisions } from '../../db/schema/index.js';
import { estimate } from '../../src/inference/estimate.js';
import { createKey } from '../../src/keys/keys.js';
import { silentLogger } from '../../src/observability/logger.js';
import { costMicro, DEFAULT_PRICES } from '../../src/pricing/pricing.js';
import { redisRunner } from '../../src/store/redis.js';
import { createStore } from '../../src/store/typed-store.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { filePrefix } from '../support/engines.js';
import { createHarness, type Harness } from '../support/harness.js';
import { deleteKeysWithPrefix } from '../support/redis-cleanup.js';
import { infer } from '../support/sse.js';

/** Tiers map to pools; a pool the caller may not use is replaced and the decision recorded. */
let harness: Harness;

beforeAll(async () => {
  harness = await createHarness({ config: { localModelTokens: 4 } });
});
afterAll(() => harness.close());

async function caller(tier: number, options: { sandbox?: boolean } = {}) {
  const tenant = await createTenant(harness.services, { name: `Tier ${tier}`, tier });
  await harness.services.store.credit({ tenantId: tenant.id, grantId: 'g', amountMicro: 1_000_000n });
  const { key } = await createKey(harness.services, tenant.id, { name: 'k', ...options });
  return { tenantId: tenant.id, key };
}

async function ask(key: string, pool: string) {
  const response = await infer(harness, key, { prompt: 'abcdefgh', max_tokens: 4, pool });
  await response.text();
  return response;
}

async function decisions(tenantId: string) {
  return harness.db.select().from(poolDecisions).where(eq(poolDecisions.tenantId, tenantId));
}

describe('pool enforcement', () => {
  it('routes two tenants of different tiers asking for the same pool differently, and the rows say why', async () => {
    const enterprise = await caller(8);
    const free = await caller(2);

    const granted = await ask(enterprise.key, 'flagship');
    expect(granted.status).toBe(200);
    expect(granted.headers.get('x-pool-used')).toBe('flagship');

    const downgraded = await ask(free.key, 'flagship');
    expect(downgraded.status).toBe(200);
    expect(downgraded.headers.get('x-pool-used')).toBe('standard');

    await expect.poll(() => decisions(free.tenantId)).toHaveLength(1);
    const [row] = await decisions(free.tenantId);
    expect(row).toMatchObject({
      requested: 'flagship',
      actual: 'standard',
      reason: 'tier',
      keyId: expect.any(String),
    });
    // The reservation at the pool actually used: "abcdefgh" at its bound (8 bytes + the chat
    // template's 24 tokens) + 4 at `standard`.
    expect(row?.costMicro).toBe(costMicro('standard', 8 + 24 + 4));
    // A request served as asked is not a decision.
    expect(await decisions(enterprise.tenantId)).toEqual([]);
  });

  it('a sandbox key gets cheap whatever it asks for (reason sandbox)', async () => {
    const sandbox = await caller(8, { sandbox: true });
    expect((await ask(sandbox.key, 'reasoning')).headers.get('x-pool-used')).toBe('cheap');
    await expect
      .poll(() => decisions(sandbox.tenantId))
      .toMatchObject([{ requested: 'reasoning', actual: 'cheap', reason: 'sandbox' }]);
  });

  it('refuses a pool that does not exist with 400 unknown_pool before admission: nothing reserved, no rate limit counted, no decision', async () => {
    const tenant = await createTenant(harness.services, { name: 'Typo', tier: 5 });
    await harness.services.store.credit({ tenantId: tenant.id, grantId: 'g', amountMicro: 1_000_000n });
    // One request a minute: a refused request that counted would leave none for the next.
    const { key } = await createKey(harness.services, tenant.id, { name: 'k', rpmLimit: 1 });
    const refused = await infer(harness, key, { prompt: 'abcdefgh', max_tokens: 4, pool: 'gpt-9' });
    expect(refused.status).toBe(400);
    expect(await refused.json()).toMatchObject({
      error: {
        code: 'unknown_pool',
        message: expect.stringContaining('"gpt-9"'),
        requestId: expect.any(String),
      },
    });
    expect(refused.headers.get('x-pool-used')).toBeNull();
    expect(await harness.services.store.snapshot(tenant.id)).toMatchObject({
      reservedMicro: 0n,
      committedMicro: 0n,
    });
    expect((await ask(key, 'standard')).status).toBe(200);
    // A sandbox key too: it is not silently given `cheap`.
    expect((await ask((await caller(8, { sandbox: true })).key, 'gpt-9')).status).toBe(400);
    // Neither request is a decision: one was refused, the other served as asked.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await decisions(tenant.id)).toEqual([]);
  });

  it('a denied request records no decision', async () => {
    const tenant = await createTenant(harness.services, { name: 'Broke', tier: 2 });
    const { key } = await createKey(harness.services, tenant.id, { name: 'k' });
    expect((await ask(key, 'flagship')).status).toBe(402);
    // Give a fire-and-forget insert the time it would take, then check nothing was written.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await decisions(tenant.id)).toEqual([]);
  });
});

describe('POOL_LIMITS: a global gate per pool, across tenants', () => {
  const PROMPT = 'abcdefgh';
  // What one request may use (the reservation's tokens): the gate charges that.
  const perRequest = estimate('reasoning', PROMPT, 4, DEFAULT_PRICES).maxPromptTokens + 4;
  const keyPrefix = filePrefix();
  // The scripts the store runs, in order, to count round trips per request.
  const scripts: string[] = [];
  let gated: Harness;
  beforeAll(async () => {
    const runner = redisRunner({ url: inject('redisUrl'), keyPrefix, log: silentLogger() });
    const store = createStore(
      {
        ...runner,
        run: (name, keys, args) => {
          scripts.push(name);
          return runner.run(name, keys, args);
        },
      },
      { log: silentLogger() },
    );
    // Two requests' worth of tokens a minute. A stopped clock: the bucket does not refill while the test runs.
    const startMs = Date.now();
    gated = await createHarness({
      store,
      clock: { now: () => startMs },
      config: { localModelTokens: 4, poolLimits: { reasoning: 2 * perRequest, architect: perRequest - 1 } },
    });
  });
  afterAll(async () => {
    await gated.close();
    await deleteKeysWithPrefix(inject('redisUrl'), keyPrefix);
  });

  async function proTenant() {
    const tenant = await createTenant(gated.services, { name: 'Pro', tier: 5 });
    await gated.services.store.credit({ tenantId: tenant.id, grantId: 'g', amountMicro: 1_000_000n });
    const { key } = await createKey(gated.services, tenant.id, { name: 'k' });
    // Marked in the tenant index as its first request would be (once a minute per process; counted
    // in tenant-index.test.ts): the calls counted here are every request's.
    await gated.services.tenantActivity.mark(tenant.id, Date.now());
    return { tenantId: tenant.id, key };
  }

  /**
   * The response, its JSON body if any, the admission scripts it ran, and every store call the
   * request made (the harness starts no background work: the spend drain runs only when flushed).
   */
  async function send(key: string, pool: string) {
    scripts.length = 0;
    const response = await infer(gated, key, { prompt: PROMPT, max_tokens: 4, pool });
    const text = await response.text();
    const body = response.headers.get('content-type')?.includes('json') ? JSON.parse(text) : undefined;
    return {
      response,
      body,
      admission: scripts.filter((name) => name === 'admit' || name === 'pool_gate'),
      storeCalls: [...scripts],
    };
  }

  it('answers 429 on dimension pool once the pool’s tokens for the minute are used, for every tenant; the reservation is cancelled', async () => {
    const first = await proTenant();
    for (let i = 0; i < 2; i += 1) {
      const served = await send(first.key, 'reasoning');
      expect(served.response.status).toBe(200);
      expect(served.admission).toEqual(['admit', 'pool_gate']);
      // The settlement (and its spend row, into the outbox) is the one call after them.
      expect(served.storeCalls).toEqual(['admit', 'pool_gate', 'budget_finalize']);
    }
    const refused = await send(first.key, 'reasoning');
    expect(refused.response.status).toBe(429);
    // One request's tokens refill at two requests' a minute in 30 s.
    expect(refused.body.error).toMatchObject({
      code: 'rate_limited',
      dimension: 'pool',
      limit: 2 * perRequest,
      remaining: 0,
      retryAfterMs: 30_000,
    });
    expect(refused.response.headers.get('retry-after')).toBe('30');
    // The refused request's reservation was cancelled at once: only the two served are charged.
    expect(await gated.services.store.snapshot(first.tenantId)).toMatchObject({
      reservedMicro: 0n,
      committedMicro: 2n * costMicro('reasoning', 2 + 4),
    });

    const second = await proTenant();
    const alsoRefused = await send(second.key, 'reasoning');
    expect(alsoRefused.response.status).toBe(429);
    expect(alsoRefused.body.error).toMatchObject({ dimension: 'pool' });
    expect(await gated.services.store.snapshot(second.tenantId)).toMatchObject({
      reservedMicro: 0n,
      committedMicro: 0n,
    });
  });

  it('refuses with 400 (not a 429 to retry) a request larger than its pool serves in a minute, reserving nothing', async () => {
    // Tier 5 may not use architect; an enterprise tenant may.
    const tenant = await createTenant(gated.services, { name: 'Enterprise', tier: 8 });
    await gated.services.store.credit({ tenantId: tenant.id, grantId: 'g', amountMicro: 1_000_000n });
    const enterprise = (await createKey(gated.services, tenant.id, { name: 'k' })).key;
    const refused = await send(enterprise, 'architect');
    expect(refused.response.status).toBe(400);
    expect(refused.body.error).toMatchObject({
      code: 'invalid_request',
      pool: 'architect',
      poolLimitTokensPerMinute: perRequest - 1,
      requestTokens: perRequest,
    });
    expect(refused.admission).toEqual([]);
    expect((await gated.services.store.snapshot(tenant.id)).reservedMicro).toBe(0n);
  });

  it('leaves pools without a limit alone: one store round trip to admit, one to settle, nothing else', async () => {
    const { tenantId, key } = await proTenant();
    // Rows earlier tests left held are written first: the flush below is this tenant's alone.
    await gated.services.spend.flush();
    for (const pool of ['cheap', 'standard']) {
      const served = await send(key, pool);
      expect(served.response.status).toBe(200);
      expect(served.admission).toEqual(['admit']);
      expect(served.storeCalls).toEqual(['admit', 'budget_finalize']);
    }
    // The spend rows reach PostgreSQL off the request path, written by this process (the timer's
    // write), whose acknowledgements wait for the tenant's next finalize: no store call.
    scripts.length = 0;
    await gated.services.spend.writeHeld();
    expect(scripts).toEqual([]);
    const outbox = async () => {
      const read = await gated.services.store.outboxRead({ tenantId, count: 10 });
      return read.status === 'OUTBOX' ? read.entries.length : -1;
    };
    expect(await outbox()).toBe(2);
    // The next request's finalize takes both entries out: still two calls.
    const next = await send(key, 'cheap');
    expect(next.storeCalls).toEqual(['admit', 'budget_finalize']);
    expect(await outbox()).toBe(1);
  });
});
