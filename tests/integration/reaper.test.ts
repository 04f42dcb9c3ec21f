import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type JobContext, LeaseLost } from '../../src/jobs/job.js';
import { pruneAfterMs, reapCycle } from '../../src/jobs/reaper.js';
import { StoreUnavailable } from '../../src/store/errors.js';
import type { Store } from '../../src/store/typed-store.js';
import { admitInput, type EngineUnderTest, makeEngine, newTenant, settleOne } from '../support/engines.js';
import { createHarness, type Harness } from '../support/harness.js';

/**
 * The reaper's cycle on real Redis: every tenant of the index, page by page; the failure rule;
 * pruning; fencing. Faults are injected by a store that wraps the real one and fails, hangs or
 * interleaves a mark for tenants the test names.
 */
let engine: EngineUnderTest;
let harness: Harness;
const calls = { reap: 0, prune: 0, fence: 0 };
const faults: {
  failReap: Set<string>;
  hangReap: Set<string>;
  /** Runs after the reaper read this tenant's snapshot, before it prunes (a request marking it). */
  afterSnapshot: Map<string, () => Promise<unknown>>;
} = { failReap: new Set(), hangReap: new Set(), afterSnapshot: new Map() };
const hung: (() => void)[] = [];

/** The test's engine (a fresh key prefix per test: an index of its own), with the faults above. */
const store = new Proxy({} as Store, {
  get(_target, prop: keyof Store) {
    const inner = engine.store;
    if (prop === 'reap') {
      return async (input: Parameters<Store['reap']>[0]) => {
        calls.reap += 1;
        if (faults.failReap.has(input.tenantId)) throw new StoreUnavailable();
        if (faults.hangReap.has(input.tenantId)) await new Promise<void>((resolve) => hung.push(resolve));
        return inner.reap(input);
      };
    }
    if (prop === 'snapshot') {
      return async (tenantId: string) => {
        const snapshot = await inner.snapshot(tenantId);
        await faults.afterSnapshot.get(tenantId)?.();
        return snapshot;
      };
    }
    if (prop === 'pruneTenant') {
      return (input: Parameters<Store['pruneTenant']>[0]) => {
        calls.prune += 1;
        return inner.pruneTenant(input);
      };
    }
    return inner[prop];
  },
});

beforeAll(async () => {
  engine = makeEngine('redis');
  harness = await createHarness({ store });
});
afterAll(async () => {
  await harness.close();
  await engine.close();
});
beforeEach(() => {
  engine = makeEngine('redis');
  Object.assign(calls, { reap: 0, prune: 0, fence: 0 });
  faults.failReap.clear();
  faults.hangReap.clear();
  faults.afterSnapshot.clear();
});
afterEach(async () => {
  for (const release of hung.splice(0)) release();
  await engine.close();
});

function context(overrides: Partial<JobContext> = {}): JobContext {
  return {
    services: harness.services,
    holder: 'test',
    startedAtMs: Date.now(),
    fence: async () => {
      calls.fence += 1;
    },
    signal: new AbortController().signal,
    ...overrides,
  };
}

/**
 * A tenant marked in the index at `markedAtMs`, with `expired` reservations of 100 µ past their
 * deadline and `live` ones of 100 µ that are not, out of 1,000,000 µ of credits.
 */
async function tenantWith(options: { expired: number; live?: number; markedAtMs?: number }): Promise<string> {
  const tenantId = await newTenant(engine.store);
  await engine.store.credit({ tenantId, grantId: 'g', amountMicro: 1_000_000n });
  const nowMs = Date.now();
  for (let i = 0; i < options.expired; i += 1) {
    // Admitted 10 s ago with the shortest TTL (1 s): past its deadline.
    const admitted = await engine.store.admit(admitInput(tenantId, { nowMs: nowMs - 10_000, ttlMs: 1_000 }));
    expect(admitted.status).toBe('ADMITTED');
  }
  for (let i = 0; i < (options.live ?? 0); i += 1) {
    const admitted = await engine.store.admit(admitInput(tenantId, { nowMs, ttlMs: 300_000 }));
    expect(admitted.status).toBe('ADMITTED');
  }
  await engine.store.markTenant({ tenantId, nowMs: options.markedAtMs ?? nowMs });
  return tenantId;
}

async function reserved(tenantId: string): Promise<bigint> {
  return (await engine.store.snapshot(tenantId)).reservedMicro;
}

async function indexedTenants(): Promise<string[]> {
  const page = await engine.store.listTenants({ limit: 1000 });
  if (page.status !== 'PAGE') throw new Error(page.status);
  return page.tenants.map((tenant) => tenant.tenantId);
}

async function metric(name: string): Promise<number> {
  const text = await harness.services.metrics.registry.getSingleMetricAsString(name);
  return Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
}

describe('a reaper cycle', () => {
  it('releases every expired reservation of every indexed tenant, page by page, and leaves live ones', async () => {
    const tenants = [];
    for (let i = 0; i < 23; i += 1) tenants.push(await tenantWith({ expired: 2, live: i % 3 === 0 ? 1 : 0 }));
    // More than one budget_reap call's worth (100): reaped again until a call releases fewer.
    const busy = await tenantWith({ expired: 250 });
    const releasedBefore = await metric('spicegate_reaper_released_total');

    const cycle = await reapCycle(context(), { intervalMs: 30_000, pageSize: 5 });

    expect(cycle).toEqual({
      tenants: 24,
      failed: 0,
      released: 23 * 2 + 250,
      releasedMicro: BigInt((23 * 2 + 250) * 100),
      pruned: 0,
      aborted: false,
    });
    for (const [i, tenantId] of tenants.entries()) {
      expect(await reserved(tenantId)).toBe(i % 3 === 0 ? 100n : 0n);
    }
    expect(await engine.store.snapshot(busy)).toEqual({
      creditedMicro: 1_000_000n,
      committedMicro: 0n,
      reservedMicro: 0n,
      availableMicro: 1_000_000n,
      outboxMicro: 0n,
      present: true,
    });
    expect(await metric('spicegate_reaper_released_total')).toBe(releasedBefore + 23 * 2 + 250);
    // A fence before every write: 23 tenants × 1 budget_reap call, the busy one × 3.
    expect(calls.reap).toBe(23 + 3);
    expect(calls.fence).toBe(calls.reap);
  });

  it('drops a tenant idle past the prune window with nothing reserved or waiting in its outbox; keeps the others', async () => {
    const { config } = harness.services;
    const longAgo = Date.now() - pruneAfterMs(config) - 60_000;
    const idle = await tenantWith({ expired: 1, markedAtMs: longAgo });
    const idleHolding = await tenantWith({ expired: 0, live: 1, markedAtMs: longAgo });
    const recent = await tenantWith({ expired: 1 });
    // Idle, nothing reserved, but a settlement of 0 (not counted in `bal.outbox`) still waits to be
    // drained: the drain job finds it only through the index.
    const idleWaiting = await tenantWith({ expired: 0, markedAtMs: longAgo });
    await settleOne(engine.store, idleWaiting, { actualCostMicro: 0n });
    expect((await engine.store.snapshot(idleWaiting)).outboxMicro).toBe(0n);
    // Judged idle, then a request marks it before the prune lands: the mark wins.
    const racing = await tenantWith({ expired: 0, markedAtMs: longAgo });
    faults.afterSnapshot.set(racing, () => engine.store.markTenant({ tenantId: racing, nowMs: Date.now() }));
    const prunedBefore = await metric('spicegate_tenants_pruned_total');

    const cycle = await reapCycle(context(), { intervalMs: 30_000 });

    expect(cycle).toMatchObject({ tenants: 5, released: 2, pruned: 1, failed: 0 });
    expect((await indexedTenants()).sort()).toEqual([idleHolding, recent, idleWaiting, racing].sort());
    expect(await reserved(idle)).toBe(0n);
    expect(await reserved(idleHolding)).toBe(100n);
    // Prunes were fenced too: 5 reaps and the 2 prune attempts (idle, racing).
    expect(calls.prune).toBe(2);
    expect(calls.fence).toBe(5 + 2);
    expect(await metric('spicegate_tenants_pruned_total')).toBe(prunedBefore + 1);
  });

  it('goes on past failing tenants while at most half fail, counting and logging each', async () => {
    const tenants = [];
    for (let i = 0; i < 10; i += 1) tenants.push(await tenantWith({ expired: 1 }));
    const failing = tenants.slice(0, 5);
    for (const tenantId of failing) faults.failReap.add(tenantId);
    const failuresBefore = await metric('spicegate_reaper_tenant_failures_total');
    const abortedBefore = await metric('spicegate_reaper_cycles_aborted_total');

    const cycle = await reapCycle(context(), { intervalMs: 30_000 });

    expect(cycle).toMatchObject({ tenants: 10, failed: 5, released: 5, aborted: false });
    for (const tenantId of tenants)
      expect(await reserved(tenantId)).toBe(failing.includes(tenantId) ? 100n : 0n);
    expect(await metric('spicegate_reaper_tenant_failures_total')).toBe(failuresBefore + 5);
    expect(await metric('spicegate_reaper_cycles_aborted_total')).toBe(abortedBefore);
    const warned = harness.logs.filter((line) => line.msg === 'reaper: tenant failed');
    expect(warned.map((line) => line.tenantId)).toEqual(expect.arrayContaining(failing));
  });

  it('stops the cycle when more than half its tenants fail: an error log and the aborted metric', async () => {
    const tenants = [];
    for (let i = 0; i < 15; i += 1) tenants.push(await tenantWith({ expired: 1 }));
    // The index lists tenants in byte order: the first page (5) fails whole.
    const inOrder = [...tenants].sort();
    for (const tenantId of inOrder.slice(0, 5)) faults.failReap.add(tenantId);
    const abortedBefore = await metric('spicegate_reaper_cycles_aborted_total');

    const cycle = await reapCycle(context(), { intervalMs: 30_000, pageSize: 5 });

    expect(cycle).toMatchObject({ tenants: 5, failed: 5, released: 0, aborted: true });
    // The pages after the first were never visited: their reservations are still held.
    for (const tenantId of inOrder) expect(await reserved(tenantId)).toBe(100n);
    expect(await metric('spicegate_reaper_cycles_aborted_total')).toBe(abortedBefore + 1);
    expect(
      harness.logs.filter((line) => line.msg === 'reaper cycle stopped: more than half its tenants failed'),
    ).toEqual([expect.objectContaining({ level: 'error', tenants: 5, failed: 5 })]);

    // The store recovers: the next cycle releases everything.
    faults.failReap.clear();
    expect(await reapCycle(context(), { intervalMs: 30_000, pageSize: 5 })).toMatchObject({
      tenants: 15,
      released: 15,
      aborted: false,
    });
  });

  it('gives up on a tenant that hangs after its timeout and carries on with the others', async () => {
    const tenants = [];
    for (let i = 0; i < 3; i += 1) tenants.push(await tenantWith({ expired: 1 }));
    const [stuck] = tenants as [string];
    faults.hangReap.add(stuck);

    const cycle = await reapCycle(context(), { intervalMs: 30_000, tenantTimeoutMs: 100 });

    expect(cycle).toMatchObject({ tenants: 3, failed: 1, released: 2, aborted: false });
    const timedOut = harness.logs.filter(
      (line) => line.msg === 'reaper: tenant failed' && line.tenantId === stuck,
    );
    expect(JSON.stringify(timedOut)).toContain('took over 100 ms');
  });

  it('stops writing at the first fence that finds the lease lost', async () => {
    for (let i = 0; i < 12; i += 1) await tenantWith({ expired: 1 });
    let fences = 0;
    const lostAfter = 3;
    const ctx = context({
      fence: async () => {
        fences += 1;
        if (fences > lostAfter) throw new LeaseLost('reaper', 'STALE');
      },
    });

    await expect(reapCycle(ctx, { intervalMs: 30_000 })).rejects.toBeInstanceOf(LeaseLost);
    // Only the writes whose fence passed were made.
    expect(calls.reap).toBe(lostAfter);
  });
});
