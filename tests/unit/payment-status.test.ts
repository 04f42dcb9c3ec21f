import { describe, expect, it } from 'vitest';
import { PAYMENT_STATUSES, type PaymentStatus, statusRank, transition } from '../../src/payments/status.js';

/** The transition rules of DESIGN.md §4, over every pair of statuses. */
describe('payment status transitions', () => {
  const terminal: PaymentStatus[] = ['failed', 'expired', 'refunded'];

  it('ranks waiting 0 < confirming 1 = partially_paid 1 < confirmed 2 < sending 3 < finished 4', () => {
    expect(
      ['waiting', 'confirming', 'partially_paid', 'confirmed', 'sending', 'finished'].map((s) =>
        statusRank(s as PaymentStatus),
      ),
    ).toEqual([0, 1, 1, 2, 3, 4]);
  });

  it('decides every pair: nothing after an end, only refunded after finished, never backward', () => {
    for (const current of PAYMENT_STATUSES) {
      for (const next of PAYMENT_STATUSES) {
        const decision = transition(current, 1_000, next, 2_000);
        let expected: ReturnType<typeof transition>;
        if (terminal.includes(current)) expected = { apply: false, reason: 'after_terminal' };
        else if (current === 'finished')
          expected = next === 'refunded' ? { apply: true } : { apply: false, reason: 'after_finished' };
        else if (terminal.includes(next)) expected = { apply: true };
        else if (statusRank(next) < statusRank(current)) expected = { apply: false, reason: 'backward' };
        else expected = { apply: true };
        expect([current, next, decision]).toEqual([current, next, expected]);
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
