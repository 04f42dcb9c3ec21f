import { PAYMENT_STATUSES, type PaymentStatus } from '../../db/schema/payments.js';

export { PAYMENT_STATUSES, type PaymentStatus };

/**
 * DESIGN.md §4: waiting 0 < confirming 1 = partially_paid 1 < confirmed 2 < sending 3 < finished 4.
 * failed, expired and refunded end a payment; they carry rank 5 only so a sort puts them last.
 */
const RANKS: Record<PaymentStatus, number> = {
  waiting: 0,
  confirming: 1,
  partially_paid: 1,
  confirmed: 2,
  sending: 3,
  finished: 4,
  failed: 5,
  expired: 5,
  refunded: 5,
};

export function statusRank(status: PaymentStatus): number {
  return RANKS[status];
}

export function isPaymentStatus(value: string): value is PaymentStatus {
  return (PAYMENT_STATUSES as readonly string[]).includes(value);
}

/** No status moves a payment on from these. */
export function isTerminal(status: PaymentStatus): boolean {
  return status === 'failed' || status === 'expired' || status === 'refunded';
}

/** Finished or terminal: admin.payments.stuck and reconciliation leave these alone. */
export function isSettled(status: PaymentStatus): boolean {
  return status === 'finished' || isTerminal(status);
}

/** Why a reported status does not move the payment (recorded on its webhook event). */
export type Refusal = 'after_terminal' | 'after_finished' | 'backward' | 'stale';

/**
 * Whether `next` (reported at `nextUpdatedAtMs`) moves a payment now at `current` (last moved by a
 * report of `lastUpdatedAtMs`, null before any):
 * - nothing moves a failed, expired or refunded payment; a finished one only to refunded;
 * - failed and expired end any payment not yet finished; refunded any payment at all;
 * - otherwise the rank must not go down; the same rank (the same status again, or confirming ↔
 *   partially_paid) is applied when its report is newer, and mints nothing twice;
 * - a report whose `updated_at` is not newer than the last one applied is stale (one without an
 *   `updated_at` is ordered by rank alone).
 */
export function transition(
  current: PaymentStatus,
  lastUpdatedAtMs: number | null,
  next: PaymentStatus,
  nextUpdatedAtMs: number,
): { apply: true } | { apply: false; reason: Refusal } {
  if (isTerminal(current)) return { apply: false, reason: 'after_terminal' };
  if (current === 'finished' && next !== 'refunded') return { apply: false, reason: 'after_finished' };
  // 0: a report without `updated_at`, which cannot be ordered by it (the rank still applies).
  if (lastUpdatedAtMs !== null && nextUpdatedAtMs > 0 && nextUpdatedAtMs <= lastUpdatedAtMs)
    return { apply: false, reason: 'stale' };
  if (isTerminal(next)) return { apply: true };
  if (statusRank(next) < statusRank(current)) return { apply: false, reason: 'backward' };
  return { apply: true };
}
