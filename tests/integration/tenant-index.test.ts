import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createKey } from '../../src/keys/keys.js';
import { silentLogger } from '../../src/observability/logger.js';
import { StoreUnavailable } from '../../src/store/errors.js';
import { redisRunner } from '../../src/store/redis.js';
import { createStore, type Store } from '../../src/store/typed-store.js';
import { TENANT_MARK_PERIOD_MS } from '../../src/tenants/activity.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { filePrefix } from '../support/engines.js';
import { createHarness, type Harness } from '../support/harness.js';
import { deleteKeysWithPrefix } from '../support/redis-cleanup.js';
import { events, infer } from '../support/sse.js';

/**
 * The request path marks its tenant in the tenant index (what the reaper visits) before admitting
 * it, once a minute per process: every store call a request makes is recorded here, on real Redis.
 */
describe('the tenant index on the request path', () => {
  const keyPrefix = filePrefix();
  // The scripts the store ran, in order, since the last reset.
  const scripts: string[] = [];
  const failMarksFor = new Set<string>();
  let nowMs = Date.UTC(2026, 10, 15, 12, 0, 0);
  let harness: Harness;
  let store: Store;

  beforeAll(async () => {
    const runner = redisRunner({ url: inject('redisUrl'), keyPrefix, log: silentLogger() });
    const recorded = createStore(
      {
        ...runner,
        run: (name, keys, args) => {
          scripts.push(name);
          return runner.run(name, keys, args);
        },
      },
      { log: silentLogger() },
    );
    store = {
      ...recorded,
      // A store that fails this tenant's mark, as a store timing out on that one call would.
      markTenant: async (input) => {
        if (failMarksFor.has(input.tenantId)) throw new StoreUnavailable();
        return recorded.markTenant(input);
      },
    };
    harness = await createHarness({ store, clock: { now: () => nowMs } });
  });
  afterAll(async () => {
    await harness.close();
    await deleteKeysWithPrefix(inject('redisUrl'), keyPrefix);
  });

  async function paidKey(): Promise<{ tenantId: string; key: string }> {
    const tenant = await createTenant(harness.services, { name: 'Indexed', tier: 9 });
    await store.credit({ tenantId: tenant.id, grantId: 'g', amountMicro: 10_000_000n });
    const { key } = await createKey(harness.services, tenant.id, { name: 'k', rpmLimit: 10_000 });
    return { tenantId: tenant.id, key };
  }

  /** One whole request (to its done event); the scripts it ran. */
  async function request(key: string): Promise<string[]> {
    scripts.length = 0;
    const response = await infer(harness, key, { prompt: 'abcd', max_tokens: 4 });
    expect(response.status).toBe(200);
    expect(events(await response.text()).at(-1)).toMatchObject({ type: 'done' });
    return [...scripts];
  }

  async function indexed(tenantId: string): Promise<number | undefined> {
    let after: string | undefined;
    for (;;) {
      const page = await store.listTenants({ limit: 1000, ...(after === undefined ? {} : { after }) });
      if (page.status !== 'PAGE') throw new Error(page.status);
      const found = page.tenants.find((tenant) => tenant.tenantId === tenantId);
      if (found !== undefined) return found.lastActiveMs;
      if (page.next === null) return undefined;
      after = page.next;
    }
  }

  it('marks the tenant before its first admit; then a request is two store calls until a minute has passed', async () => {
    const { tenantId, key } = await paidKey();
    expect(await indexed(tenantId)).toBeUndefined();
    const markedAt = nowMs;
    expect(await request(key)).toEqual(['tenant_index_mark', 'admit', 'budget_finalize']);
    expect(await indexed(tenantId)).toBe(markedAt);

    nowMs += 1_000;
    expect(await request(key)).toEqual(['admit', 'budget_finalize']);
    nowMs += TENANT_MARK_PERIOD_MS - 1_001;
    expect(await request(key)).toEqual(['admit', 'budget_finalize']);

    // A minute after the mark: marked again, with the new time.
    nowMs += 1;
    expect(await request(key)).toEqual(['tenant_index_mark', 'admit', 'budget_finalize']);
    expect(await indexed(tenantId)).toBe(nowMs);
    nowMs += 1_000;
  });

  it('concurrent first requests of a tenant share one mark', async () => {
    const { key } = await paidKey();
    scripts.length = 0;
    const responses = await Promise.all(
      Array.from({ length: 5 }, () => infer(harness, key, { prompt: 'abcd', max_tokens: 4 })),
    );
    for (const response of responses) {
      expect(response.status).toBe(200);
      await response.text();
    }
    expect(scripts.filter((name) => name === 'tenant_index_mark')).toHaveLength(1);
    expect(scripts.filter((name) => name === 'admit')).toHaveLength(5);
    nowMs += 1_000;
  });

  it('a mark the store does not answer fails the request (503) before anything is reserved', async () => {
    const { tenantId, key } = await paidKey();
    failMarksFor.add(tenantId);
    scripts.length = 0;
    const refused = await infer(harness, key, { prompt: 'abcd', max_tokens: 4 });
    expect(refused.status).toBe(503);
    expect(await refused.json()).toMatchObject({ error: { code: 'store_unavailable' } });
    expect(scripts).not.toContain('admit');
    expect((await store.snapshot(tenantId)).reservedMicro).toBe(0n);

    // The store is back: the next request marks the tenant, then admits it.
    failMarksFor.delete(tenantId);
    expect(await request(key)).toEqual(['tenant_index_mark', 'admit', 'budget_finalize']);
    expect(await indexed(tenantId)).toBe(nowMs);
    nowMs += 1_000;
  });
});
