import type { Config } from '../config.js';
import { conservationJob } from './conservation.js';
import type { Job } from './job.js';
import { outboxDrainJob } from './outbox-drain.js';
import { paymentCreditsJob } from './payment-credits.js';
import { paymentReconciliationJob } from './payment-reconciliation.js';
import { reaperJob } from './reaper.js';
import { signingMaintenanceJob } from './signing-maintenance.js';
import { unsettledSpendJob } from './unsettled-spend.js';

export { type Job, type JobContext, LeaseLost } from './job.js';
export { type JobsState, jobsState, releaseLeases, runDueJobs } from './runner.js';

/**
 * Every background job, in the order a pass starts them. A new job is its file and one line here;
 * `singleton: true` gives it a lease and fenced writes.
 */
export function gatewayJobs(config: Config): Job[] {
  return [
    reaperJob({ intervalMs: config.reaperIntervalMs }),
    outboxDrainJob,
    unsettledSpendJob,
    conservationJob({ intervalMs: config.conservationIntervalMs }),
    paymentCreditsJob,
    paymentReconciliationJob({ intervalMs: config.paymentReconcileIntervalMs }),
    signingMaintenanceJob,
  ];
}

/**
 * The jobs `spicegate serve` runs: all of them, or with JOBS=off (a `spicegate worker` runs the
 * shared ones) only those that keep this instance's own state, such as its copy of the signing keys.
 */
export function serveJobs(config: Config): Job[] {
  const jobs = gatewayJobs(config);
  return config.jobs === 'on' ? jobs : jobs.filter((job) => !job.singleton);
}
