import { and, asc, eq, isNull } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import { type SpendRow, spend } from '../../db/schema/index.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../observability/logger.js';
import { StoreUnavailable } from '../store/errors.js';
import type { Store } from '../store/typed-store.js';
import { drainOutbox, writeSettledSpend } from './outbox.js';

export type SpendEntry = Omit<SpendRow, 'createdAt' | 'settledAt' | 'settled' | 'parkedReason'>;

// The outbox of each tenant this process settled for is drained within 1 s, which keeps the table
// close to live (the jobs runner drains every active tenant as well, e.g. after a crash).
const FLUSH_MS = 1_000;
// …and as soon as this many settlements wait: a small batch keeps each write short.
const FLUSH_ROWS = 64;
// Unsettled rows are retried every 5 s, while the store is down as well as after.
const RETRY_MS = 5_000;

/**
 * Spend rows in PostgreSQL, idempotent by reservation id. A settled request's row is not kept
 * here: finalize appended it to the tenant's outbox in the store, and this recorder only remembers
 * which tenants to drain (drainOutbox, outbox.ts), so a process killed at any instant loses no
 * charge. An unsettled row (the store failed at finalize) is written at once, since it is the only
 * record of a charge, and `settleUnsettled` finalizes it later (FINALIZED, or LATE_FINALIZE if the
 * reaper got there first). Nothing is lost and nothing is charged twice.
 */
export class SpendRecorder {
  /** Tenants with settlements of this process that may still wait in their outbox. */
  private tenants = new Set<string>();
  /** Settlements since the last drain began. */
  private waiting = 0;
  private timers: ReturnType<typeof setInterval>[] = [];
  private flushSoon = false;
  /** The last drain's outcome: drains run one at a time, each after the one before. */
  private writing: Promise<void> = Promise.resolve();
  /** The last drain failed: until one succeeds, only the timer drains (no retry per request). */
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

  /** Stops the timers and drains the remembered tenants (after any drain still running). */
  async stop(): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    await this.flush();
  }

  /**
   * A settled request: its row is already in the tenant's outbox (finalize put it there); the
   * tenant is remembered and drained within a second (sooner when FLUSH_ROWS wait).
   */
  settled(tenantId: string): void {
    this.tenants.add(tenantId);
    this.waiting += 1;
    if (this.waiting < FLUSH_ROWS || this.flushSoon || this.failing) return;
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

  /**
   * Drains the outboxes of the remembered tenants into PostgreSQL, after any drain still running;
   * after a failure the tenants stay remembered (draining again is harmless).
   */
  flush(): Promise<void> {
    const drain = this.writing.then(() => this.drain());
    this.writing = drain.catch(() => undefined);
    return drain;
  }

  private async drain(): Promise<void> {
    if (this.tenants.size === 0) return;
    const tenants = [...this.tenants];
    this.tenants = new Set();
    this.waiting = 0;
    try {
      await drainOutbox(this.db, this.store, tenants);
      this.failing = false;
    } catch (error) {
      for (const tenantId of tenants) this.tenants.add(tenantId);
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
    const touched = new Set<string>();
    for (const row of rows) {
      let result: Awaited<ReturnType<Store['finalize']>>;
      try {
        result = await this.store.finalize({
          tenantId: row.tenantId,
          reservationId: row.reservationId,
          // A free (sandbox) row holds its notional cost: its reservation is 0, so finalize
          // charges min(notional, 0) = 0.
          actualCostMicro: row.costMicro,
          nowMs: this.clock.now(),
          spend: {
            keyId: row.keyId,
            promptTokens: row.promptTokens,
            completionTokens: row.completionTokens,
            free: row.free,
          },
        });
      } catch (error) {
        if (error instanceof StoreUnavailable) break;
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
      // The store settled it (now, or earlier: ALREADY_FINALIZED when the timed-out finalize did
      // run). Written here from the store's answer, with the same statement as the drain: the row
      // is settled and its entry written once, whichever of the two comes first; its outbox entry,
      // if any, is drained below as well and adds nothing.
      await writeSettledSpend(this.db, [
        {
          ...row,
          // A free row keeps its notional cost (it was charged 0); any other, what was charged.
          costMicro: row.free ? row.costMicro : result.chargedMicro,
          chargedMicro: result.chargedMicro,
          settledAt: new Date(this.clock.now()),
        },
      ]);
      touched.add(row.tenantId);
      this.log.info(
        { reservationId: row.reservationId, status: result.status },
        'unsettled spend row settled',
      );
      settled += 1;
    }
    // Their outbox entries (this settlement's, or the timed-out finalize's) leave the outbox.
    for (const tenantId of touched) this.tenants.add(tenantId);
    if (touched.size > 0)
      await this.flush().catch((error) => this.log.warn({ err: error }, 'spend flush failed'));
    return settled;
  }
}
