import type { OutboxAckEntry } from '../store/contracts.js';

/** The most acknowledgements one finalize carries (budget_finalize v5 takes up to 1,000). */
export const ACKS_PER_FINALIZE = 100;

/**
 * Outbox entries this process has written to PostgreSQL and not yet acknowledged, by tenant. They
 * ride on the tenant's next finalize (budget_finalize v5, ARGV[11..]), so a busy tenant's
 * acknowledgements cost no store call of their own; `due` hands out those no finalize took in
 * time, for an outbox_ack call each. Until acknowledged an entry stays in the outbox, where the
 * drain would only write it again, which adds nothing.
 */
export class PendingAcks {
  private readonly waiting = new Map<string, { entries: OutboxAckEntry[]; sinceMs: number }>();

  /** Entries just written; `nowMs` starts their wait unless older ones of the tenant wait already. */
  add(tenantId: string, entries: OutboxAckEntry[], nowMs: number): void {
    if (entries.length === 0) return;
    const pending = this.waiting.get(tenantId);
    if (pending === undefined) this.waiting.set(tenantId, { entries: [...entries], sinceMs: nowMs });
    else pending.entries.push(...entries);
  }

  /** Up to ACKS_PER_FINALIZE of the tenant's entries, oldest first, for its next finalize. */
  take(tenantId: string): OutboxAckEntry[] {
    const pending = this.waiting.get(tenantId);
    if (pending === undefined) return [];
    const taken = pending.entries.splice(0, ACKS_PER_FINALIZE);
    if (pending.entries.length === 0) this.waiting.delete(tenantId);
    return taken;
  }

  /** Entries whose finalize failed (it may or may not have run): they wait again. */
  putBack(tenantId: string, entries: OutboxAckEntry[], nowMs: number): void {
    if (entries.length === 0) return;
    const pending = this.waiting.get(tenantId);
    if (pending === undefined) this.waiting.set(tenantId, { entries: [...entries], sinceMs: nowMs });
    else pending.entries.unshift(...entries);
  }

  /** Removes and returns every tenant's entries that have waited at least `minWaitMs` (0: all). */
  due(nowMs: number, minWaitMs: number): [tenantId: string, entries: OutboxAckEntry[]][] {
    const due: [string, OutboxAckEntry[]][] = [];
    for (const [tenantId, pending] of this.waiting) {
      if (nowMs - pending.sinceMs < minWaitMs) continue;
      due.push([tenantId, pending.entries]);
      this.waiting.delete(tenantId);
    }
    return due;
  }
}
