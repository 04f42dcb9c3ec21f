import { describe, expect, it } from 'vitest';
import { PAYMENT_STATUSES, type PaymentStatus, statusRank, transition } from '../../src/payments/status.js';

/** The transition rules of DESIGN.md §4, over every pair of statuses. */
describe('payment status transitions', () => {
  it('ranks waiting 0 < confirming 1 = partially_paid 1 < confirmed 2 < sending 3 < finished 4', () => {
    expect(
      ['waiting', 'confirming', 'partially_paid', 'confirmed', 'sending', 'finished'].map((s) =>
        statusRank(s as PaymentStatus),
      ),
    ).toEqual([0, 1, 1, 2, 3, 4]);
  });

  // Written out by hand from DESIGN.md §4: for each current status, the reported statuses that move
  // it (a newer report); every other one is refused for the reason given.
  const moves: Record<PaymentStatus, PaymentStatus[]> = {
    waiting: [
      'waiting',
      'confirming',
      'partially_paid',
      'confirmed',
      'sending',
      'finished',
      'failed',
      'expired',
      'refunded',
    ],
    confirming: [
      'confirming',
      'partially_paid',
      'confirmed',
      'sending',
      'finished',
      'failed',
      'expired',
      'refunded',
    ],
    partially_paid: [
      'confirming',
      'partially_paid',
      'confirmed',
      'sending',
      'finished',
      'failed',
      'expired',
      'refunded',
    ],
    confirmed: ['confirmed', 'sending', 'finished', 'failed', 'expired', 'refunded'],
    sending: ['sending', 'finished', 'failed', 'expired', 'refunded'],
    finished: ['refunded'],
    failed: [],
    expired: [],
    refunded: [],
  };
  const refusal: Record<PaymentStatus, string> = {
    waiting: 'backward',
    confirming: 'backward',
    partially_paid: 'backward',
    confirmed: 'backward',
    sending: 'backward',
    finished: 'after_finished',
    failed: 'after_terminal',
    expired: 'after_terminal',
    refunded: 'after_terminal',
  };

  it('decides every pair as the table says: nothing after an end, only refunded after finished, never backward', () => {
    for (const current of PAYMENT_STATUSES) {
      for (const next of PAYMENT_STATUSES) {
        const expected = moves[current].includes(next)
          ? { apply: true }
          : { apply: false, reason: refusal[current] };
        expect([current, next, transition(current, 1_000, next, 2_000)]).toEqual([current, next, expected]);
      }
    }
  });

  it('is stale when updated_at is not newer, and orders a report without updated_at by rank alone', () => {
    expect(transition('confirming', 2_000, 'confirmed', 2_000)).toEqual({ apply: false, reason: 'stale' });
    expect(transition('confirming', 2_000, 'confirmed', 1_999)).toEqual({ apply: false, reason: 'stale' });
    expect(transition('confirming', 2_000, 'confirmed', 0)).toEqual({ apply: true });
    expect(transition('confirmed', 2_000, 'confirming', 0)).toEqual({ apply: false, reason: 'backward' });
    expect(transition('waiting', null, 'waiting', 0)).toEqual({ apply: true });
  });
});
