import type { Job } from './job.js';

// 5 s: an unsettled row holds a charge the store has not applied; settle it soon after the store
// is back, without hammering a store that is still down.
const UNSETTLED_SPEND_INTERVAL_MS = 5_000;

/**
 * Settles the spend rows whose finalize failed (the store was down), once the store answers
 * (`SpendRecorder.settleUnsettled`). One instance at a time: settling is idempotent, the lease
 * only spares the duplicate work.
 */
export const unsettledSpendJob: Job = {
  name: 'unsettled-spend',
  intervalMs: UNSETTLED_SPEND_INTERVAL_MS,
  singleton: true,
  run: async (ctx) => {
    await ctx.services.spend.settleUnsettled({ beforeWrite: () => ctx.fence() });
  },
};
