import type { Config } from '../config.js';
import type { IndexedTenant } from '../store/contracts.js';
import { indexedTenantPages, TENANT_MARK_PERIOD_MS } from '../tenants/activity.js';
import { type Job, type JobContext, LeaseLost } from './job.js';

// 100 tenants a page, 8 at a time: a page is one store call, and a cycle over 1,000 tenants stays
// well under a second on a local Redis without flooding it.
const PAGE_SIZE = 100;
const CONCURRENCY = 8;
// Reservations released per budget_reap call; a tenant with more is reaped again at once.
const REAP_BATCH = 100;
// 10 s: a tenant's reap takes milliseconds; one that hangs must not hold the whole cycle.
const TENANT_TIMEOUT_MS = 10_000;

export interface ReaperOptions {
  intervalMs: number;
  /** Tenants per page of the index; the failure rule is judged after each page. */
  pageSize?: number;
  tenantTimeoutMs?: number;
}

/** What one cycle did (also its log line). */
export interface ReapCycle {
  tenants: number;
  failed: number;
  released: number;
  releasedMicro: bigint;
  pruned: number;
  /** Stopped because more than half the tenants so far failed. */
  aborted: boolean;
}

/**
 * The reaper (DESIGN.md §3 budget_reap): every REAPER_INTERVAL_MS, one instance releases the
 * reservations past their deadline in every tenant of the tenant index, and drops idle tenants from
 * the index. A released reservation charges nothing (docs/engine.md "The reaper").
 */
export function reaperJob(options: ReaperOptions): Job {
  return {
    name: 'reaper',
    intervalMs: options.intervalMs,
    singleton: true,
    run: async (ctx) => {
      await reapCycle(ctx, options);
    },
  };
}

/**
 * How long a tenant stays in the index after its last mark: a mark is at most one period older
 * than the tenant's newest reservation, whose deadline is RESERVATION_TTL_MS later, and the reaper
 * releases it within one more interval.
 */
export function pruneAfterMs(config: Pick<Config, 'reservationTtlMs' | 'reaperIntervalMs'>): number {
  return TENANT_MARK_PERIOD_MS + config.reservationTtlMs + config.reaperIntervalMs;
}

/**
 * Whether the reaper may drop a tenant from the index: not marked since the cutoff (so any
 * reservation it made is past its deadline and was reaped), nothing reserved now, and no entry
 * waiting in its outbox, charged or not (the drain job finds outboxes through the index).
 */
export function mayPrune(
  tenant: { lastActiveMs: number; reservedMicro: bigint; outboxEntries: number },
  cutoffMs: number,
): boolean {
  return tenant.lastActiveMs <= cutoffMs && tenant.reservedMicro === 0n && tenant.outboxEntries === 0;
}

export async function reapCycle(ctx: JobContext, options: ReaperOptions): Promise<ReapCycle> {
  const { store, log, metrics, config, clock } = ctx.services;
  const pageSize = options.pageSize ?? PAGE_SIZE;
  const timeoutMs = options.tenantTimeoutMs ?? TENANT_TIMEOUT_MS;
  const cutoffMs = Math.max(0, ctx.startedAtMs - pruneAfterMs(config));
  const cycle: ReapCycle = {
    tenants: 0,
    failed: 0,
    released: 0,
    releasedMicro: 0n,
    pruned: 0,
    aborted: false,
  };
  for await (const page of indexedTenantPages(store, pageSize)) {
    if (ctx.signal.aborted) break;
    await forEachLimited(page, CONCURRENCY, async (tenant) => {
      if (ctx.signal.aborted) return;
      cycle.tenants += 1;
      try {
        const done = await withTimeout(reapTenant(ctx, tenant, cutoffMs), timeoutMs, tenant.tenantId);
        cycle.released += done.released;
        cycle.releasedMicro += done.releasedMicro;
        if (done.pruned) cycle.pruned += 1;
      } catch (error) {
        if (error instanceof LeaseLost) throw error;
        cycle.failed += 1;
        metrics.reaperTenantFailures.inc();
        log.warn({ tenantId: tenant.tenantId, err: error }, 'reaper: tenant failed');
      }
    });
    if (cycle.failed * 2 > cycle.tenants) {
      cycle.aborted = true;
      break;
    }
  }

  metrics.reaperReleased.inc(cycle.released);
  metrics.reaperReleasedMicro.inc(Number(cycle.releasedMicro));
  metrics.tenantsPruned.inc(cycle.pruned);
  const summary = {
    tenants: cycle.tenants,
    failed: cycle.failed,
    released: cycle.released,
    releasedMicro: cycle.releasedMicro.toString(),
    pruned: cycle.pruned,
    durationMs: clock.now() - ctx.startedAtMs,
  };
  if (cycle.aborted) {
    metrics.reaperCyclesAborted.inc();
    log.error(summary, 'reaper cycle stopped: more than half its tenants failed');
  } else if (cycle.released > 0 || cycle.failed > 0) {
    log.info(summary, 'reaper cycle');
  } else {
    log.debug(summary, 'reaper cycle');
  }
  return cycle;
}

/** One tenant: release what is past its deadline (in batches), then drop it from the index if idle. */
async function reapTenant(
  ctx: JobContext,
  tenant: IndexedTenant,
  cutoffMs: number,
): Promise<{ released: number; releasedMicro: bigint; pruned: boolean }> {
  const { store, clock } = ctx.services;
  const { tenantId } = tenant;
  let released = 0;
  let releasedMicro = 0n;
  for (;;) {
    await ctx.fence();
    const reaped = await store.reap({ tenantId, nowMs: clock.now(), maxCount: REAP_BATCH });
    if (reaped.status !== 'REAPED') throw new Error(`budget_reap refused ${reaped.field}`);
    released += reaped.count;
    releasedMicro += reaped.releasedMicro;
    if (reaped.count < REAP_BATCH || ctx.signal.aborted) break;
  }
  if (tenant.lastActiveMs > cutoffMs) return { released, releasedMicro, pruned: false };
  const { reservedMicro } = await store.snapshot(tenantId);
  // Entries of 0 (free or uncharged requests) are not in `bal.outbox`: the stream itself is read.
  const waiting = await store.outboxRead({ tenantId, count: 1 });
  if (waiting.status !== 'OUTBOX') throw new Error(`outbox_read refused ${waiting.field}`);
  const outboxEntries = waiting.entries.length;
  if (!mayPrune({ lastActiveMs: tenant.lastActiveMs, reservedMicro, outboxEntries }, cutoffMs)) {
    return { released, releasedMicro, pruned: false };
  }
  await ctx.fence();
  const pruned = await store.pruneTenant({ tenantId, cutoffMs });
  return { released, releasedMicro, pruned: pruned.status === 'PRUNED' };
}

/**
 * Runs `work` over the items, `limit` at a time. The first LeaseLost stops the others from
 * starting items and is rethrown once the started ones have ended.
 */
async function forEachLimited<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>) {
  let next = 0;
  let lost: LeaseLost | undefined;
  const lane = async () => {
    while (lost === undefined && next < items.length) {
      const item = items[next] as T;
      next += 1;
      await work(item).catch((error: unknown) => {
        if (error instanceof LeaseLost) lost ??= error;
        else throw error;
      });
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  if (lost !== undefined) throw lost;
}

/** The tenant's work, or a rejection after `ms` (the work itself goes on; a late reap is harmless). */
function withTimeout<T>(work: Promise<T>, ms: number, tenantId: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`reaping tenant ${tenantId} took over ${ms} ms`)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}
