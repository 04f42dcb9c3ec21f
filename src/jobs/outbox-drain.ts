import { drainOutbox } from '../ledger/outbox.js';
import { indexedTenantPages } from '../tenants/activity.js';
import type { Job } from './job.js';

// 10 s: the gateway that settled a charge drains it within 1 s itself; this job is for the
// settlements of a gateway that died before it could (docs/ledger.md "The outbox").
const OUTBOX_DRAIN_INTERVAL_MS = 10_000;
// Entries younger than this are left to the gateway that settled them: it writes its own rows
// within a second (FLUSH_MS) and acknowledges them, so the job does not write them a second time.
export const OUTBOX_DRAIN_GRACE_MS = 5_000;

/**
 * Drains the outbox of every tenant in the tenant index into PostgreSQL (spend rows and their
 * entries), each write fenced: a holder that lost its lease stops before writing. Only entries
 * older than OUTBOX_DRAIN_GRACE_MS: younger ones are their live gateway's to write. Idempotent by
 * reservation id, so a gateway writing the same rows adds nothing.
 */
export const outboxDrainJob: Job = {
  name: 'outbox-drain',
  intervalMs: OUTBOX_DRAIN_INTERVAL_MS,
  singleton: true,
  run: async (ctx) => {
    const { db, store } = ctx.services;
    for await (const tenants of indexedTenantPages(store)) {
      if (ctx.signal.aborted) return;
      await drainOutbox(
        db,
        store,
        tenants.map((tenant) => tenant.tenantId),
        {
          beforeWrite: () => ctx.fence(),
          olderThanMs: ctx.startedAtMs - OUTBOX_DRAIN_GRACE_MS,
        },
      );
    }
  },
};
