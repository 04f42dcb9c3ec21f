import { and, desc, eq, gte, lt, or, sql } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import { type PoolDecisionRow, poolDecisions, spend } from '../../db/schema/index.js';
import { asScope, asTenant } from '../../db/scope.js';
import { usageWindow } from '../billing/usage.js';
import type { Logger } from '../observability/logger.js';
import type { Pool } from '../pricing/pricing.js';
import type { Services } from '../services.js';
import { getTenant } from '../tenants/tenants.js';

/**
 * A pool-enforcement decision row (DESIGN.md §4), idempotent by reservation id. Written off the
 * request path: a failed insert is logged, never the caller's error (the promise never rejects).
 */
export function insertPoolDecision(db: Db, log: Logger, row: PoolDecisionRow): Promise<void> {
  return asTenant(db, row.tenantId, (tx) => tx.insert(poolDecisions).values(row).onConflictDoNothing()).then(
    () => undefined,
    (error: unknown) =>
      log.warn({ err: error, reservationId: row.reservationId }, 'pool decision not recorded'),
  );
}

/** Decision rows one admin.poolDecisions call lists at most, newest first. */
export const POOL_DECISIONS_LISTED = 500;

export interface PoolDecisionReport {
  /** The window: `from` inclusive, `to` exclusive (ISO 8601); tenant and pool as filtered (null: all). */
  from: string;
  to: string;
  tenantId: string | null;
  pool: string | null;
  /** Newest first, at most POOL_DECISIONS_LISTED; `truncated` when the window holds more. */
  decisions: {
    reservationId: string;
    tenantId: string;
    keyId: string;
    requested: string;
    actual: string;
    reason: string;
    costMicro: string;
    createdAt: string;
  }[];
  truncated: boolean;
  /**
   * Per pool that served requests in the window (spend rows, unsettled ones included), by pool:
   * requests, tokens, what was charged (free requests count 0), and how many decisions routed
   * requests into it (`routedIn`) and away from it (`routedOut`).
   */
  utilisation: {
    pool: string;
    requests: number;
    promptTokens: number;
    completionTokens: number;
    costMicro: string;
    routedIn: number;
    routedOut: number;
  }[];
}

/**
 * admin.poolDecisions: the pool decisions in a window (of one tenant, or all; `pool` matches the
 * pool asked for or the one used) and the utilisation of each pool over the same window.
 */
export async function poolDecisionReport(
  services: Services,
  input: {
    tenantId?: string | undefined;
    from?: Date | undefined;
    to?: Date | undefined;
    pool?: Pool | undefined;
  },
): Promise<PoolDecisionReport> {
  const { from, to } = usageWindow(services, input);
  if (input.tenantId !== undefined) await getTenant(services, input.tenantId);
  const decided = and(
    input.tenantId === undefined ? undefined : eq(poolDecisions.tenantId, input.tenantId),
    input.pool === undefined
      ? undefined
      : or(eq(poolDecisions.requested, input.pool), eq(poolDecisions.actual, input.pool)),
    gte(poolDecisions.createdAt, from),
    lt(poolDecisions.createdAt, to),
  );
  // One tenant's, or (for an operator) every tenant's.
  const [rows, routed, served] = await asScope(services.db, input.tenantId, (tx) =>
    Promise.all([
      tx
        .select()
        .from(poolDecisions)
        .where(decided)
        .orderBy(desc(poolDecisions.createdAt), desc(poolDecisions.reservationId))
        .limit(POOL_DECISIONS_LISTED + 1),
      // Per pool routed into (grouping 1: the `actual` set) and away from (grouping 2: `requested`).
      tx
        .select({
          set: sql<number>`grouping(${poolDecisions.actual}, ${poolDecisions.requested})::int`,
          actual: poolDecisions.actual,
          requested: poolDecisions.requested,
          count: sql<number>`count(*)::int`,
        })
        .from(poolDecisions)
        .where(decided)
        .groupBy(sql`grouping sets ((${poolDecisions.actual}), (${poolDecisions.requested}))`),
      tx
        .select({
          pool: spend.pool,
          requests: sql<number>`count(*)::int`,
          promptTokens: sql<string>`sum(${spend.promptTokens})::text`,
          completionTokens: sql<string>`sum(${spend.completionTokens})::text`,
          costMicro: sql<string | null>`sum(${spend.costMicro}) filter (where not ${spend.free})::text`,
        })
        .from(spend)
        .where(
          and(
            input.tenantId === undefined ? undefined : eq(spend.tenantId, input.tenantId),
            input.pool === undefined ? undefined : eq(spend.pool, input.pool),
            gte(spend.createdAt, from),
            lt(spend.createdAt, to),
          ),
        )
        .groupBy(spend.pool),
    ]),
  );
  const routedCount = (set: number, pool: string) =>
    routed.find((row) => row.set === set && (set === 1 ? row.actual : row.requested) === pool)?.count ?? 0;
  // A pool that only lost requests to decisions is listed too (with no requests served).
  const pools = new Set([
    ...served.map((row) => row.pool),
    ...routed.map((row) => (row.set === 1 ? row.actual : row.requested)),
  ]);
  if (input.pool !== undefined) for (const pool of pools) if (pool !== input.pool) pools.delete(pool);
  return {
    from: from.toISOString(),
    to: to.toISOString(),
    tenantId: input.tenantId ?? null,
    pool: input.pool ?? null,
    decisions: rows.slice(0, POOL_DECISIONS_LISTED).map((row) => ({
      reservationId: row.reservationId,
      tenantId: row.tenantId,
      keyId: row.keyId,
      requested: row.requested,
      actual: row.actual,
      reason: row.reason,
      costMicro: row.costMicro.toString(),
      createdAt: row.createdAt.toISOString(),
    })),
    truncated: rows.length > POOL_DECISIONS_LISTED,
    utilisation: [...pools].sort().map((pool) => {
      const row = served.find((candidate) => candidate.pool === pool);
      return {
        pool,
        requests: row?.requests ?? 0,
        promptTokens: Number(row?.promptTokens ?? 0),
        completionTokens: Number(row?.completionTokens ?? 0),
        costMicro: row?.costMicro ?? '0',
        routedIn: routedCount(1, pool),
        routedOut: routedCount(2, pool),
      };
    }),
  };
}
