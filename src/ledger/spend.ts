import { and, asc, eq, isNull } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import { type SpendRow, spend } from '../../db/schema/index.js';
import { asAdmin, asTenant } from '../../db/scope.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../observability/logger.js';
import type { OutboxAckEntry } from '../store/contracts.js';
import { StoreUnavailable } from '../store/errors.js';
import type { Store } from '../store/typed-store.js';
import { withHydration } from './hydrate.js';
import { drainOutbox, type SettledSpend, WRITE_CONCURRENCY, writeSettledSpend } from './outbox.js';
import { PendingAcks } from './outbox-acks.js';

/** An unsettled row as a request leaves it; `userId` / `channelId` absent: the request named none. */
export type SpendEntry = Omit<
  SpendRow,
  'createdAt' | 'settledAt' | 'settled' | 'parkedReason' | 'userId' | 'channelId'
> &
  Partial<Pick<SpendRow, 'userId' | 'channelId'>>;

// This process's settled rows are written within 1 s, which keeps the table close to live.
const FLUSH_MS = 1_000;
// …and as soon as this many wait; one statement per this many rows: a small batch keeps each
// write short (docs/performance.md).
const FLUSH_ROWS = 64;
// A written row's outbox entry waits this long for its tenant's next finalize to carry the
// acknowledgement, then the timer's next write acknowledges it alone: within ~1.5 s of being
// written, well before the drain reads entries older than 5 s.
const ACK_WAIT_MS = 500;

/** A settled row this process holds until it is in PostgreSQL, and its entry in the tenant's outbox. */
interface Held {
  row: SettledSpend;
  /** The outbox entry finalize appended for it (null: none to acknowledge). */
  outboxEntryId: string | null;
}

/**
 * Spend rows in PostgreSQL, idempotent by reservation id. A settled request's row is held here
 * and written within a second by this process, which then acknowledges its outbox entry (in the
 * tenant's next finalize, or alone when none comes within ACK_WAIT_MS): so
 * each row is normally written once, by the process that settled it. Finalize appended the same
 * row to the tenant's outbox in the store, and the outbox drain (drainOutbox, run by the jobs for
 * entries older than a few seconds) writes what a process killed at any instant left behind. If
 * the store loses its data instead, the copy held here still reaches the book. An unsettled row
 * (the store failed at finalize) is written at once, since it is the only record of a charge,
 * and `settleUnsettled` finalizes it later (FINALIZED; LATE_FINALIZE if the reaper got there
 * first; RECOVERED if the store lost the reservation). Nothing is lost, nothing charged twice.
 */
export class SpendRecorder {
  /** Settled rows not yet written, oldest first. */
  private held: Held[] = [];
  private timers: ReturnType<typeof setInterval>[] = [];
  private flushSoon = false;
  /** The last write's outcome: writes run one at a time, each after the one before. */
  private writing: Promise<void> = Promise.resolve();
  /** The last write failed: until one succeeds, only the timer writes (no retry per request). */
  private failing = false;
  /** Written rows' outbox entries, acknowledged by the tenant's next finalize or alone. */
  private readonly acks = new PendingAcks();

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
        () => void this.writeHeld().catch((error) => this.log.warn({ err: error }, 'spend flush failed')),
        FLUSH_MS,
      ),
    );
    // Unsettled rows are settled by the `unsettled-spend` job (src/jobs), under its lease.
    for (const timer of this.timers) timer.unref();
  }

  /** Stops the timers and writes every row held (after any write still running). */
  async stop(): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    await this.flush();
  }

  /**
   * A settled request: its row (also in the tenant's outbox, as `outboxEntryId`) is held and
   * written within a second (sooner when FLUSH_ROWS wait), then that entry acknowledged.
   */
  settled(row: SettledSpend, outboxEntryId: string | null): void {
    this.held.push({ row, outboxEntryId });
    if (this.held.length < FLUSH_ROWS || this.flushSoon || this.failing) return;
    this.flushSoon = true;
    setImmediate(() => {
      this.flushSoon = false;
      void this.writeHeld().catch((error) => this.log.warn({ err: error }, 'spend flush failed'));
    });
  }

  /** The store failed at finalize: written now, settled later. */
  async unsettled(entry: SpendEntry): Promise<void> {
    const row = { ...entry, settled: false, createdAt: new Date(this.clock.now()), settledAt: null };
    await asTenant(this.db, entry.tenantId, (tx) => tx.insert(spend).values(row).onConflictDoNothing());
    this.log.error(
      { reservationId: entry.reservationId, tenantId: entry.tenantId },
      'finalize failed: spend row kept unsettled',
    );
  }

  /**
   * Writes every row held into PostgreSQL, after any write still running, and acknowledges every
   * outbox entry written and not yet acknowledged. Rows whose write failed stay held (writing them
   * again is harmless).
   */
  flush(): Promise<void> {
    return this.serially(0);
  }

  /**
   * What the timer and a full batch run: writes every row held, like flush, but leaves their
   * entries' acknowledgements to the tenant's next finalize (`takeAcks`), acknowledging alone only
   * the entries that have waited ACK_WAIT_MS.
   */
  writeHeld(): Promise<void> {
    return this.serially(ACK_WAIT_MS);
  }

  /**
   * Up to 100 written entries of the tenant for its next finalize to acknowledge (budget_finalize
   * v5): no store call of their own. Give them back with `putBackAcks` if that finalize fails.
   */
  takeAcks(tenantId: string): OutboxAckEntry[] {
    return this.acks.take(tenantId);
  }

  putBackAcks(tenantId: string, entries: OutboxAckEntry[]): void {
    this.acks.putBack(tenantId, entries, this.clock.now());
  }

  private serially(minAckWaitMs: number): Promise<void> {
    const write = this.writing.then(async () => {
      try {
        await this.write();
      } finally {
        await this.acknowledgeWaiting(minAckWaitMs);
      }
    });
    this.writing = write.catch(() => undefined);
    return write;
  }

  private async write(): Promise<void> {
    const taken = this.held;
    this.held = [];
    const batches: Held[][] = [];
    for (let from = 0; from < taken.length; from += FLUSH_ROWS)
      batches.push(taken.slice(from, from + FLUSH_ROWS));
    // A few statements in flight (WRITE_CONCURRENCY, outbox.ts).
    const failed: Held[][] = [];
    let firstError: unknown;
    let next = 0;
    const writer = async () => {
      for (let batch = batches[next++]; batch !== undefined; batch = batches[next++]) {
        try {
          await writeSettledSpend(
            this.db,
            batch.map((held) => held.row),
          );
        } catch (error) {
          failed.push(batch);
          firstError ??= error;
          continue;
        }
        this.written(batch);
      }
    };
    await Promise.all(Array.from({ length: Math.min(WRITE_CONCURRENCY, batches.length) }, writer));
    if (failed.length > 0) {
      // The batches that failed stay held, before any settled meanwhile.
      this.held = [...failed.flat(), ...this.held];
      this.failing = true;
      throw firstError;
    }
    this.failing = false;
  }

  /** Written rows: their entries wait to be acknowledged. */
  private written(batch: Held[]): void {
    const nowMs = this.clock.now();
    for (const { row, outboxEntryId } of batch) {
      if (outboxEntryId === null) continue;
      this.acks.add(row.tenantId, [{ id: outboxEntryId, reservationId: row.reservationId }], nowMs);
    }
  }

  /**
   * Takes the entries that have waited `minWaitMs` (0: all) out of their tenants' outboxes, one
   * call per tenant (per 1,000 entries, outbox_ack's most). If the store fails, the entries stay
   * there and the outbox drain writes them again later, which adds nothing.
   */
  private async acknowledgeWaiting(minWaitMs: number): Promise<void> {
    const calls = this.acks.due(this.clock.now(), minWaitMs).flatMap(([tenantId, entries]) =>
      Array.from({ length: Math.ceil(entries.length / 1000) }, (_, i) => ({
        tenantId,
        entries: entries.slice(i * 1000, (i + 1) * 1000),
      })),
    );
    await Promise.all(
      calls.map(async ({ tenantId, entries }) => {
        try {
          const ack = await this.store.outboxAck({ tenantId, entries });
          if (ack.status !== 'ACKED') throw new Error(`outbox_ack refused ${ack.field}`);
        } catch (error) {
          this.log.warn({ err: error, tenantId }, 'outbox entries not acknowledged: left to the drain');
        }
      }),
    );
  }

  /**
   * Finalizes every unsettled row the store now accepts; returns how many were settled.
   * `beforeWrite` runs before each row's store call and before the writes that follow (the job's
   * fencing check): a throw stops the run there, and what was not written stays unsettled.
   */
  async settleUnsettled(options: { beforeWrite?: () => Promise<void> } = {}): Promise<number> {
    // Oldest first, so the charges nearest their reservation's expiry are settled first.
    // Every tenant's rows: the job's platform work.
    const rows = await asAdmin(this.db, (tx) =>
      tx
        .select()
        .from(spend)
        .where(and(eq(spend.settled, false), isNull(spend.parkedReason)))
        .orderBy(asc(spend.createdAt))
        .limit(500),
    );
    let settled = 0;
    /** Tenants whose timed-out finalize had run after all: its outbox entry's id is unknown here. */
    const drain = new Set<string>();
    const services = { db: this.db, store: this.store, clock: this.clock, log: this.log, spend: this };
    for (const row of rows) {
      await options.beforeWrite?.();
      const nowMs = this.clock.now();
      let result: Exclude<Awaited<ReturnType<Store['finalize']>>, { status: 'HYDRATE' }>;
      try {
        // Recovery: a reservation the store lost with its data is still charged (RECOVERED),
        // after its balance is rebuilt from the book.
        result = await withHydration(services, row.tenantId, () =>
          this.store.finalize({
            tenantId: row.tenantId,
            reservationId: row.reservationId,
            // A free (sandbox) row holds its notional cost: its reservation is 0, so finalize
            // charges min(notional, 0) = 0.
            actualCostMicro: row.costMicro,
            nowMs,
            spend: {
              keyId: row.keyId,
              promptTokens: row.promptTokens,
              completionTokens: row.completionTokens,
              free: row.free,
            },
            recover: { pool: row.pool },
          }),
        );
      } catch (error) {
        if (error instanceof StoreUnavailable) break;
        // Another fault of this row (e.g. its balance could not be rebuilt): logged, and the rows
        // behind it are still settled; it is tried again next run.
        this.log.error(
          { err: error, reservationId: row.reservationId, tenantId: row.tenantId },
          'unsettled spend row could not be settled',
        );
        continue;
      }
      if (result.status === 'INVALID_INPUT') {
        // Retrying cannot help: parked with its reason and counted, for an operator to look at.
        const reason = `store refused ${result.field}`;
        await asAdmin(this.db, (tx) =>
          tx.update(spend).set({ parkedReason: reason }).where(eq(spend.reservationId, row.reservationId)),
        );
        this.parked.inc();
        this.log.error({ reservationId: row.reservationId, reason }, 'unsettled spend row parked');
        continue;
      }
      // The store settled it (now, or earlier: ALREADY_FINALIZED when the timed-out finalize did
      // run). Written below from the store's answer, with the same statement as the drain: the
      // row is settled and its entry written once, whichever of the two comes first.
      this.held.push({
        row: {
          ...row,
          // A free row keeps its notional cost (it was charged 0); any other, what was charged.
          costMicro: row.free ? row.costMicro : result.chargedMicro,
          chargedMicro: result.chargedMicro,
          settledAt: new Date(nowMs),
        },
        outboxEntryId: result.status === 'ALREADY_FINALIZED' ? null : result.outboxEntryId,
      });
      if (result.status === 'ALREADY_FINALIZED') drain.add(row.tenantId);
      this.log.info(
        { reservationId: row.reservationId, status: result.status },
        'unsettled spend row settled',
      );
      settled += 1;
    }
    if (settled > 0) {
      await options.beforeWrite?.();
      await this.flush().catch((error) => this.log.warn({ err: error }, 'spend flush failed'));
      // The timed-out finalize's entry, whose id only the store knows, leaves the outbox too.
      if (drain.size > 0)
        await drainOutbox(this.db, this.store, drain, {
          ...(options.beforeWrite === undefined ? {} : { beforeWrite: options.beforeWrite }),
        }).catch((error) => this.log.warn({ err: error }, 'outbox drain failed'));
    }
    return settled;
  }
}
