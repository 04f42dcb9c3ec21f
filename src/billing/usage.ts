import { and, type Column, eq, gt, gte, lt, lte, type SQL, sql } from 'drizzle-orm';
import { spend } from '../../db/schema/index.js';
import { asTenant } from '../../db/scope.js';
import { AppError } from '../errors.js';
import type { Services } from '../services.js';
import { getTenant } from '../tenants/tenants.js';
import { getBalance } from './balance.js';

/*
 * Usage read back from the `spend` table: one query for billing.usage (a tenant's own view) and
 * admin.usage (an operator's, with more cuts and the projected depletion). Fresh enough without a
 * cache: a live gateway writes its settled rows within 1 s (SpendRecorder), the outbox drain those
 * of a gateway that died within ~15 s; only charges waiting in an unsettled row (the store was
 * down at finalize) appear once the settlement job has settled them.
 */

export const DAY_MS = 86_400_000;
/** The default window: the last 30 UTC days, today included. */
export const USAGE_DEFAULT_DAYS = 30;
/** The widest window one call may ask for (a leap year). */
export const USAGE_MAX_DAYS = 366;
/** The rate the projected depletion extrapolates: the charges of the last 7 × 24 h. */
const RATE_DAYS = 7;
/** The latest depletion date shown: a rate that would last longer reads as the end of year 9999. */
const LATEST_MS = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

/** The cuts a report may hold: per UTC day (and pool), pool, API key, user. */
export type UsageGroup = 'day' | 'pool' | 'key' | 'user';
export const USAGE_GROUPS: readonly UsageGroup[] = ['day', 'pool', 'key', 'user'];

export interface UsageLine {
  requests: number;
  costMicro: string;
}

/** What a tenant was charged in a window; money as decimal strings of micro-credits. */
export interface Usage {
  tenantId: string;
  /** The window: `from` inclusive, `to` exclusive (ISO 8601). */
  from: string;
  to: string;
  requests: number;
  totalMicro: string;
  /** One row per (UTC day, pool) with charged requests, by day then pool. */
  days?: (UsageLine & { date: string; pool: string })[];
  /** Per pool, by pool. */
  pools?: (UsageLine & { pool: string })[];
  /** Per API key, by key id. */
  keys?: (UsageLine & { keyId: string })[];
  /** Per `user` the requests named, by user id; `userId` null: requests that named none (last). */
  users?: (UsageLine & { userId: string | null })[];
}

/** `from` / `to` as asked, defaulted and checked: `from` before `to`, at most USAGE_MAX_DAYS apart. */
export function usageWindow(
  services: Pick<Services, 'clock'>,
  window: { from?: Date | undefined; to?: Date | undefined },
): { from: Date; to: Date } {
  const tomorrow = Math.floor(services.clock.now() / DAY_MS) * DAY_MS + DAY_MS;
  const to = window.to ?? new Date(tomorrow);
  const from = window.from ?? new Date(to.getTime() - USAGE_DEFAULT_DAYS * DAY_MS);
  if (from.getTime() >= to.getTime()) {
    throw new AppError('invalid_request', 'from must be before to', { field: 'from' });
  }
  if (to.getTime() - from.getTime() > USAGE_MAX_DAYS * DAY_MS) {
    throw new AppError('invalid_request', `The window may span at most ${USAGE_MAX_DAYS} days`, {
      field: 'to',
    });
  }
  return { from, to };
}

/** Charged spend: settled and not free (sandbox requests are metered but cost nothing). */
const charged = (tenantId: string) =>
  and(eq(spend.tenantId, tenantId), eq(spend.settled, true), eq(spend.free, false));

/**
 * Charged spend of `tenantId` in the window, summed per cut in `groups` (and in total), from ONE
 * statement with GROUPING SETS: every cut reads the same rows, so their sums always agree.
 */
export async function usage(
  services: Services,
  tenantId: string,
  window: { from?: Date | undefined; to?: Date | undefined },
  groups: readonly UsageGroup[],
): Promise<Usage> {
  const { from, to } = usageWindow(services, window);
  await getTenant(services, tenantId);

  const date = sql<string>`to_char(${spend.createdAt} at time zone 'UTC', 'YYYY-MM-DD')`;
  const on = {
    day: groups.includes('day'),
    pool: groups.includes('day') || groups.includes('pool'),
    key: groups.includes('key'),
    user: groups.includes('user'),
  };
  const sets = [
    ...(on.day ? [sql`(${date}, ${spend.pool})`] : []),
    ...(groups.includes('pool') ? [sql`(${spend.pool})`] : []),
    ...(on.key ? [sql`(${spend.keyId})`] : []),
    ...(on.user ? [sql`(${spend.userId})`] : []),
    sql`()`,
  ];
  // A column outside every grouping set may be neither selected nor passed to grouping(): those
  // read as null and 1 ("not grouped by"). grouping(x) is 0 in the rows of a set that holds x.
  const column = <T>(included: boolean, expression: SQL<T> | Column) =>
    included ? sql<T>`${expression}` : sql<T>`null`;
  const grouped = (included: boolean, expression: SQL | Column) =>
    included ? sql<number>`grouping(${expression})::int` : sql<number>`1`;
  const rows = await asTenant(services.db, tenantId, (tx) =>
    tx
      .select({
        byDay: grouped(on.day, date),
        byPool: grouped(on.pool, spend.pool),
        byKey: grouped(on.key, spend.keyId),
        byUser: grouped(on.user, spend.userId),
        date: column<string>(on.day, date),
        pool: column<string>(on.pool, spend.pool),
        keyId: column<string>(on.key, spend.keyId),
        userId: column<string | null>(on.user, spend.userId),
        requests: sql<number>`count(*)::int`,
        costMicro: sql<string | null>`sum(${spend.costMicro})::text`,
      })
      .from(spend)
      .where(and(charged(tenantId), gte(spend.createdAt, from), lt(spend.createdAt, to)))
      .groupBy(sql`grouping sets (${sql.join(sets, sql`, `)})`),
  );

  type Row = (typeof rows)[number];
  const line = (row: Row): UsageLine => ({ requests: row.requests, costMicro: row.costMicro ?? '0' });
  const rowsOf = (cut: UsageGroup | 'total') =>
    rows.filter((row) => {
      if (cut === 'day') return row.byDay === 0;
      if (cut === 'pool') return row.byPool === 0 && row.byDay === 1;
      if (cut === 'key') return row.byKey === 0;
      if (cut === 'user') return row.byUser === 0;
      return row.byDay + row.byPool + row.byKey + row.byUser === 4;
    });
  const total = rowsOf('total')[0];
  const report: Usage = {
    tenantId,
    from: from.toISOString(),
    to: to.toISOString(),
    requests: total?.requests ?? 0,
    totalMicro: total?.costMicro ?? '0',
  };
  if (groups.includes('day'))
    report.days = rowsOf('day')
      .map((row) => ({ date: row.date, pool: row.pool, ...line(row) }))
      .sort((a, b) => compare(a.date, b.date) || compare(a.pool, b.pool));
  if (groups.includes('pool'))
    report.pools = rowsOf('pool')
      .map((row) => ({ pool: row.pool, ...line(row) }))
      .sort((a, b) => compare(a.pool, b.pool));
  if (groups.includes('key'))
    report.keys = rowsOf('key')
      .map((row) => ({ keyId: row.keyId, ...line(row) }))
      .sort((a, b) => compare(a.keyId, b.keyId));
  if (groups.includes('user'))
    report.users = rowsOf('user')
      .map((row) => ({ userId: row.userId, ...line(row) }))
      .sort((a, b) => compare(a.userId, b.userId));
  return report;
}

/** When the tenant's available balance runs out at its last 7 days' rate; money as decimal strings. */
export interface Depletion {
  availableMicro: string;
  /** Charged in the 7 × 24 h up to now. */
  last7DaysMicro: string;
  /** Its daily average (rounded down). */
  dailyRateMicro: string;
  /**
   * ISO 8601: now + available / (last7DaysMicro / 7 days), in whole ms; null when nothing was
   * charged in the last 7 days; now when nothing is available.
   */
  depletesAt: string | null;
}

export async function projectedDepletion(services: Services, tenantId: string): Promise<Depletion> {
  const nowMs = services.clock.now();
  const [balance, [spent]] = await Promise.all([
    getBalance(services, tenantId),
    asTenant(services.db, tenantId, (tx) =>
      tx
        .select({ costMicro: sql<string | null>`sum(${spend.costMicro})::text` })
        .from(spend)
        .where(
          and(
            charged(tenantId),
            gt(spend.createdAt, new Date(nowMs - RATE_DAYS * DAY_MS)),
            lte(spend.createdAt, new Date(nowMs)),
          ),
        ),
    ),
  ]);
  const available = BigInt(balance.availableMicro);
  const last7Days = BigInt(spent?.costMicro ?? '0');
  let depletesAt: string | null = null;
  if (last7Days > 0n) {
    // available / (last7Days / 7 days), in whole ms.
    const leftMs = available > 0n ? (available * BigInt(RATE_DAYS * DAY_MS)) / last7Days : 0n;
    depletesAt = new Date(Math.min(nowMs + Number(leftMs), LATEST_MS)).toISOString();
  }
  return {
    availableMicro: balance.availableMicro,
    last7DaysMicro: last7Days.toString(),
    dailyRateMicro: (last7Days / BigInt(RATE_DAYS)).toString(),
    depletesAt,
  };
}

/** admin.usage: the usage report with every cut asked for (default all four) and the projection. */
export async function adminUsage(
  services: Services,
  input: {
    tenantId: string;
    from?: Date | undefined;
    to?: Date | undefined;
    groupBy?: UsageGroup | undefined;
  },
): Promise<Usage & { groupBy: readonly UsageGroup[]; asOf: string; projection: Depletion }> {
  const groupBy = input.groupBy === undefined ? USAGE_GROUPS : [input.groupBy];
  const asOf = new Date(services.clock.now()).toISOString();
  const report = await usage(services, input.tenantId, { from: input.from, to: input.to }, groupBy);
  return { ...report, groupBy, asOf, projection: await projectedDepletion(services, input.tenantId) };
}

/** Ascending, null last. */
function compare(a: string | null, b: string | null): number {
  if (a === b) return 0;
  if (a === null) return 1;
  if (b === null) return -1;
  return a < b ? -1 : 1;
}
