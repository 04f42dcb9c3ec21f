import { and, asc, eq, isNull, sql } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import { type SpendRow, spend } from '../../db/schema/index.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../observability/logger.js';
import { StoreUnavailable } from '../store/errors.js';
import type { Store } from '../store/typed-store.js';
import { appendEntry, spendPostings } from './journal.js';

export type SpendEntry = Omit<SpendRow, 'createdAt' | 'settledAt' | 'settled' | 'parkedReason'>;
/** A row as the request path writes it (never parked). */
type NewSpendRow = Omit<SpendRow, 'parkedReason'>;

// Settled rows are written in batches off the request path; 1 s keeps the table close to live.
const FLUSH_MS = 1_000;
// …and as soon as this many wait: a batch is serialised in one go on the event loop, so a small
// batch keeps that stall short for the requests waiting behind it.
const FLUSH_ROWS = 64;
// Unsettled rows are retried every 5 s, while the store is down as well as after.
const RETRY_MS = 5_000;

/**
 * Spend rows in PostgreSQL, idempotent by reservation id. A settled row is queued and written in
 * batches; an unsettled one (the store failed at finalize) is written at once, since it is the only
 * record of a charge, and `settleUnsettled` finalizes it later (FINALIZED, or LATE_FINALIZE if the
 * reaper got there first). Nothing is lost and nothing is charged twice.
 */
export class SpendRecorder {
  private queue: NewSpendRow[] = [];
  private timers: ReturnType<typeof setInterval>[] = [];
  private flushSoon = false;
  /** The last write's outcome: writes run one at a time, each after the one before. */
  private writing: Promise<void> = Promise.resolve();
  /** The last write failed: until one succeeds, only the timer writes (no retry per request). */
  private failing = false;

  constructor(
    private readonly db: Db,
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly log: Logger,
    /** Counts rows the store refused to settle (parked). */
    private readonly parked: { inc(): void },
  ) {}

  start(): void {
    this.timers.push(
      setInterval(
        () => void this.flush().catch((error) => this.log.warn({ err: error }, 'spend flush failed')),
        FLUSH_MS,
      ),
      setInterval(
        () =>
          void this.settleUnsettled().catch((error) =>
            this.log.warn({ err: error }, 'spend settlement failed'),
          ),
        RETRY_MS,
      ),
    );
    for (const timer of this.timers) timer.unref();
  }

  /** Stops the timers and writes what is queued (after any write still running). */
  async stop(): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    await this.flush();
  }

  /** A settled request: queued, written within a second (sooner when FLUSH_ROWS wait). */
  settled(entry: SpendEntry): void {
    const now = new Date(this.clock.now());
    this.queue.push({ ...entry, settled: true, createdAt: now, settledAt: now });
    if (this.queue.length < FLUSH_ROWS || this.flushSoon || this.failing) return;
    this.flushSoon = true;
    setImmediate(() => {
      this.flushSoon = false;
      void this.flush().catch((error) => this.log.warn({ err: error }, 'spend flush failed'));
    });
  }

  /** The store failed at finalize: written now, settled later. */
  async unsettled(entry: SpendEntry): Promise<void> {
    const row = { ...entry, settled: false, createdAt: new Date(this.clock.now()), settledAt: null };
    await this.db.insert(spend).values(row).onConflictDoNothing();
    this.log.error(
      { reservationId: entry.reservationId, tenantId: entry.tenantId },
      'finalize failed: spend row kept unsettled',
    );
  }

  /** Writes the queued rows, after any write still running; a failed batch goes back in front. */
  flush(): Promise<void> {
    const write = this.writing.then(() => this.write());
    this.writing = write.catch(() => undefined);
    return write;
  }

  private async write(): Promise<void> {
    if (this.queue.length === 0) return;
    const batch = this.queue;
    this.queue = [];
    try {
      await this.db.execute(insertBatch(batch));
      this.failing = false;
    } catch (error) {
      this.queue = batch.concat(this.queue);
      this.failing = true;
      throw error;
    }
  }

  /** Finalizes every unsettled row the store now accepts; returns how many were settled. */
  async settleUnsettled(): Promise<number> {
    // Oldest first, so the charges nearest their reservation's expiry are settled first.
    const rows = await this.db
      .select()
      .from(spend)
      .where(and(eq(spend.settled, false), isNull(spend.parkedReason)))
      .orderBy(asc(spend.createdAt))
      .limit(500);
    let settled = 0;
    for (const row of rows) {
      let result: Awaited<ReturnType<Store['finalize']>>;
      try {
        result = await this.store.finalize({
          tenantId: row.tenantId,
          reservationId: row.reservationId,
          // A free (sandbox) row holds its notional cost: its reservation is 0, so finalize
          // charges min(notional, 0) = 0.
          actualCostMicro: row.costMicro,
          actualTokens: row.promptTokens + row.completionTokens,
          nowMs: this.clock.now(),
        });
      } catch (error) {
        if (error instanceof StoreUnavailable) return settled;
        throw error;
      }
      if (result.status === 'INVALID_INPUT') {
        // Retrying cannot help: parked with its reason and counted, for an operator to look at.
        const reason = `store refused ${result.field}`;
        await this.db
          .update(spend)
          .set({ parkedReason: reason })
          .where(eq(spend.reservationId, row.reservationId));
        this.parked.inc();
        this.log.error({ reservationId: row.reservationId, reason }, 'unsettled spend row parked');
        continue;
      }
      const settledAt = new Date(this.clock.now());
      // Only now is the charge applied: its `spend` entry is written with the row's settlement.
      const charged = row.free ? 0n : result.chargedMicro;
      await this.db.transaction(async (tx) => {
        await tx
          .update(spend)
          .set({
            settled: true,
            settledAt,
            // A free row keeps its notional cost (it was charged 0); any other, what was charged.
            ...(row.free ? {} : { costMicro: result.chargedMicro }),
          })
          .where(eq(spend.reservationId, row.reservationId));
        if (charged > 0n) {
          await appendEntry(tx, {
            tenantId: row.tenantId,
            kind: 'spend',
            reference: row.reservationId,
            postings: spendPostings(row.tenantId, charged),
            createdAt: settledAt,
          });
        }
      });
      this.log.info(
        { reservationId: row.reservationId, status: result.status },
        'unsettled spend row settled',
      );
      settled += 1;
    }
    return settled;
  }
}

/**
 * One statement and one parameter for the whole batch: the rows as JSON, expanded by
 * `jsonb_to_recordset`: one JSON.stringify, where drizzle's builder would bind every value of every
 * row (docs/performance.md). Same SQL on PostgreSQL and PGlite. Column types come from the record definition; keep it in step with
 * db/schema/spend.ts (the spend tests read the rows back).
 *
 * The same statement writes a `spend` entry for each row it inserted that charged money (settled,
 * not free, cost > 0), with the postings of `spendPostings` (journal.ts): one atomic write, and a
 * batch written twice adds neither rows nor entries. An unsettled row gets its entry when
 * `settleUnsettled` settles it.
 */
function insertBatch(rows: NewSpendRow[]) {
  const json = JSON.stringify(
    rows.map((row) => ({
      reservation_id: row.reservationId,
      tenant_id: row.tenantId,
      key_id: row.keyId,
      pool: row.pool,
      prompt_tokens: row.promptTokens,
      completion_tokens: row.completionTokens,
      cost_micro: row.costMicro.toString(),
      free: row.free,
      settled: row.settled,
      created_at: row.createdAt.toISOString(),
      settled_at: row.settledAt?.toISOString() ?? null,
    })),
  );
  return sql`with batch as (
      select * from jsonb_to_recordset(${json}::jsonb) as row(reservation_id text, tenant_id text,
        key_id text, pool text, prompt_tokens integer, completion_tokens integer, cost_micro bigint,
        free boolean, settled boolean, created_at timestamptz, settled_at timestamptz)
    ), inserted as (
      insert into spend (reservation_id, tenant_id, key_id, pool, prompt_tokens, completion_tokens,
        cost_micro, free, settled, created_at, settled_at)
      select reservation_id, tenant_id, key_id, pool, prompt_tokens, completion_tokens, cost_micro,
        free, settled, created_at, settled_at
      from batch
      on conflict do nothing
      returning reservation_id, tenant_id, cost_micro, free, settled, settled_at
    ), entries as (
      insert into journal_entries (tenant_id, kind, reference, created_at)
      select tenant_id, 'spend', reservation_id, settled_at from inserted
      where settled and not free and cost_micro > 0
      on conflict (kind, reference) do nothing
      returning id, tenant_id, reference
    )
    insert into postings (entry_id, account, amount_micro)
    select entries.id, line.account, line.amount_micro
    from entries
    join inserted on inserted.reservation_id = entries.reference
    cross join lateral (values
      ('tenant:' || entries.tenant_id || ':available', -inserted.cost_micro),
      ('tenant:' || entries.tenant_id || ':spent', inserted.cost_micro)
    ) as line(account, amount_micro)`;
}
