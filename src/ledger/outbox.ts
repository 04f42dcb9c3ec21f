import { sql } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import { asSpendBatch } from '../../db/scope.js';
import type { OutboxEntry } from '../store/contracts.js';
import type { Store } from '../store/typed-store.js';

/**
 * The outbox drain: settlements that budget_finalize appended to each tenant's outbox in the store
 * become spend rows and `spend` journal entries in PostgreSQL, then leave the outbox. Idempotent
 * by reservation id: a batch written twice, or by two drainers at once, adds nothing. No timers
 * here: the jobs runner calls it for every active tenant, for entries older than a few seconds
 * (the process that settled a request writes its row itself and acknowledges its entry, so the
 * outbox matters when that process died); the SpendRecorder for a settlement whose entry id it
 * does not know.
 */

// 64 per tenant per read and per statement: a statement's rows are serialised in one go on the
// event loop, so a small batch keeps that stall short for the requests waiting behind it
// (docs/performance.md).
const READ_COUNT = 64;
const ROWS_PER_WRITE = 64;
/**
 * Spend statements written at once (of the database pool's 10 connections), by the drain and by
 * the SpendRecorder: each waits mostly on its commit's WAL flush, which PostgreSQL shares between
 * concurrent commits (docs/performance.md, bench:ledger). Their rows never overlap.
 */
export const WRITE_CONCURRENCY = 4;
// Tenants read at once in a round.
const TENANTS_PER_ROUND = 16;

export interface DrainOptions {
  /**
   * Called before each PostgreSQL write (e.g. a fencing check): a throw aborts the drain, with
   * nothing acknowledged, so the entries stay in the outbox.
   */
  beforeWrite?: () => Promise<void>;
  /** Entries read per tenant at once (1 .. 1000). */
  readCount?: number;
  /**
   * Only entries appended before this time (ms since the epoch, by the store's clock): younger
   * ones are left to the live process that settled them, which writes its own rows and
   * acknowledges them (the jobs pass now minus a few seconds).
   */
  olderThanMs?: number;
}

export interface DrainResult {
  /** Outbox entries written and acknowledged. */
  entries: number;
  /** Of those, the ones whose spend row this drain inserted or settled (the others were already). */
  rowsSettled: number;
}

/**
 * Drains the outboxes of `tenantIds` until each is empty (as of its last read): per round, a batch
 * of each tenant's oldest entries is written in one statement, then acknowledged.
 */
export async function drainOutbox(
  db: Db,
  store: Store,
  tenantIds: Iterable<string>,
  options: DrainOptions = {},
): Promise<DrainResult> {
  const readCount = options.readCount ?? READ_COUNT;
  const result: DrainResult = { entries: 0, rowsSettled: 0 };
  let pending = [...new Set(tenantIds)];
  while (pending.length > 0) {
    const round = pending.slice(0, TENANTS_PER_ROUND);
    pending = pending.slice(TENANTS_PER_ROUND);
    const batches = await Promise.all(
      round.map(async (tenantId) => {
        const read = await store.outboxRead({
          tenantId,
          count: readCount,
          ...(options.olderThanMs === undefined ? {} : { olderThanMs: options.olderThanMs }),
        });
        if (read.status !== 'OUTBOX') throw new Error(`outbox_read refused ${read.field} (${tenantId})`);
        return { tenantId, entries: read.entries };
      }),
    );
    const rows = batches.flatMap(({ tenantId, entries }) =>
      entries.map((entry) => settledSpend(tenantId, entry)),
    );
    const chunks: SettledSpend[][] = [];
    for (let from = 0; from < rows.length; from += ROWS_PER_WRITE)
      chunks.push(rows.slice(from, from + ROWS_PER_WRITE));
    // The first failure stops the writers (nothing of this round is acknowledged) once the
    // statements in flight have ended.
    let failure: { error: unknown } | undefined;
    let next = 0;
    const writer = async () => {
      for (let chunk = chunks[next++]; chunk !== undefined && failure === undefined; chunk = chunks[next++]) {
        try {
          await options.beforeWrite?.();
          result.rowsSettled += await writeSettledSpend(db, chunk);
        } catch (error) {
          failure ??= { error };
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(WRITE_CONCURRENCY, chunks.length) }, writer));
    if (failure !== undefined) throw failure.error;
    await Promise.all(
      batches
        .filter(({ entries }) => entries.length > 0)
        .map(async ({ tenantId, entries }) => {
          const ack = await store.outboxAck({
            tenantId,
            entries: entries.map(({ id, reservationId }) => ({ id, reservationId })),
          });
          if (ack.status !== 'ACKED') throw new Error(`outbox_ack refused ${ack.field} (${tenantId})`);
        }),
    );
    result.entries += rows.length;
    // A full batch may have more behind it: that tenant goes round again.
    pending.push(...batches.filter(({ entries }) => entries.length === readCount).map((b) => b.tenantId));
  }
  return result;
}

/** A settlement the store made, as a spend row and its journal entry need it. */
export interface SettledSpend {
  reservationId: string;
  tenantId: string;
  keyId: string;
  /**
   * The request's `user` and `channel`; absent or null: none named, or a row written from the
   * outbox (budget_finalize v4's entry does not carry them, so a drained row keeps them null
   * unless its unsettled row, which has them, was written first).
   */
  userId?: string | null;
  channelId?: string | null;
  pool: string;
  promptTokens: number;
  completionTokens: number;
  /** What the row records: the charge, or a free request's notional cost. */
  costMicro: bigint;
  /** What the store charged: the journal entry's amount (no entry for 0). */
  chargedMicro: bigint;
  free: boolean;
  settledAt: Date;
}

function settledSpend(tenantId: string, entry: OutboxEntry): SettledSpend {
  return {
    reservationId: entry.reservationId,
    tenantId,
    keyId: entry.keyId,
    pool: entry.pool,
    promptTokens: entry.promptTokens,
    completionTokens: entry.completionTokens,
    costMicro: entry.costMicro,
    chargedMicro: entry.chargedMicro,
    free: entry.free,
    settledAt: new Date(entry.settledAtMs),
  };
}

/**
 * Writes settlements as settled spend rows and their `spend` entries in ONE statement; answers
 * how many rows it inserted or settled. A reservation's row is inserted settled, or — when it
 * waits unsettled (the store failed at finalize, the row was kept) — settled with the store's
 * figures and any park reason cleared (its user and channel kept: an outbox entry has none); a
 * settled row is left untouched. The entry (postings of `spendPostings`, journal.ts: keep them in
 * step) is written only for a row this statement inserted or settled that was charged more than
 * 0, and `(spend, reservation id)` is unique: so a settlement written twice, or by two drainers at
 * once, adds nothing.
 *
 * One parameter for the whole batch, the rows as JSON expanded by `jsonb_to_recordset` (one
 * JSON.stringify, where drizzle's builder would bind every value of every row:
 * docs/performance.md). Same SQL on PostgreSQL and PGlite. Column types come from the record
 * definition; keep it in step with db/schema/spend.ts (the spend tests read the rows back).
 */
export async function writeSettledSpend(db: Db, rows: SettledSpend[]): Promise<number> {
  // One row per reservation (ON CONFLICT DO UPDATE may touch a row once per statement), in one
  // order, so concurrent drainers lock rows in the same order and never deadlock.
  const unique = [...new Map(rows.map((row) => [row.reservationId, row])).values()].sort((a, b) =>
    a.reservationId < b.reservationId ? -1 : a.reservationId > b.reservationId ? 1 : 0,
  );
  if (unique.length === 0) return 0;
  // One statement, each row checked to be of a tenant the batch declares (db/scope.ts).
  const tenantIds = [...new Set(unique.map((row) => row.tenantId))];
  return asSpendBatch(db, tenantIds, (tx) => writeBatch(tx, unique));
}

/** The batch's rows, sorted and one per reservation, in one statement. */
async function writeBatch(tx: Db, unique: SettledSpend[]): Promise<number> {
  const json = JSON.stringify(
    unique.map((row) => ({
      reservation_id: row.reservationId,
      tenant_id: row.tenantId,
      key_id: row.keyId,
      user_id: row.userId ?? null,
      channel_id: row.channelId ?? null,
      pool: row.pool,
      prompt_tokens: row.promptTokens,
      completion_tokens: row.completionTokens,
      cost_micro: row.costMicro.toString(),
      charged_micro: row.chargedMicro.toString(),
      free: row.free,
      settled_at: row.settledAt.toISOString(),
    })),
  );
  const result = await tx.execute(sql`with batch as (
      select * from jsonb_to_recordset(${json}::jsonb) as row(reservation_id text, tenant_id text,
        key_id text, user_id text, channel_id text, pool text, prompt_tokens integer,
        completion_tokens integer, cost_micro bigint, charged_micro bigint, free boolean,
        settled_at timestamptz)
    ), written as (
      insert into spend as existing (reservation_id, tenant_id, key_id, user_id, channel_id, pool,
        prompt_tokens, completion_tokens, cost_micro, free, settled, created_at, settled_at)
      select reservation_id, tenant_id, key_id, user_id, channel_id, pool, prompt_tokens,
        completion_tokens, cost_micro, free, true, settled_at, settled_at
      from batch
      on conflict (reservation_id) do update
        set cost_micro = excluded.cost_micro, settled = true, settled_at = excluded.settled_at,
          parked_reason = null
        where not existing.settled
      returning existing.reservation_id
    ), attributed as (
      -- A row the drain wrote first (its outbox entry carries no user or channel) takes them from
      -- the settling gateway's copy; nothing else of a settled row changes, no entry is written.
      -- The rows are found by primary key (= any of an array): a join on the batch let the planner
      -- scan the whole table, or the tenant's rows, once per batch.
      update spend set user_id = coalesce(spend.user_id, batch.user_id),
        channel_id = coalesce(spend.channel_id, batch.channel_id)
      from batch
      where spend.reservation_id = any (array(select reservation_id from batch
          where user_id is not null or channel_id is not null))
        and spend.reservation_id = batch.reservation_id and spend.settled
        and ((spend.user_id is null and batch.user_id is not null)
          or (spend.channel_id is null and batch.channel_id is not null))
    ), entries as (
      insert into journal_entries (tenant_id, kind, reference, created_at)
      select batch.tenant_id, 'spend', batch.reservation_id, batch.settled_at
      from written join batch on batch.reservation_id = written.reservation_id
      where batch.charged_micro > 0
      on conflict (kind, reference) do nothing
      returning id, tenant_id, reference
    ), lines as (
      insert into postings (entry_id, account, amount_micro)
      select entries.id, line.account, line.amount_micro
      from entries
      join batch on batch.reservation_id = entries.reference
      cross join lateral (values
        ('tenant:' || entries.tenant_id || ':available', -batch.charged_micro),
        ('tenant:' || entries.tenant_id || ':spent', batch.charged_micro)
      ) as line(account, amount_micro)
    )
    select count(*)::text as written from written`);
  return Number(rowsOf<{ written: string }>(result)[0]?.written ?? 0);
}

/** drizzle's execute answers rows (postgres-js) or `{ rows }` (PGlite). */
function rowsOf<T>(result: unknown): T[] {
  if (Array.isArray(result)) return result as T[];
  return ((result as { rows?: T[] }).rows ?? []) as T[];
}
