import type { Services } from '../services.js';
import { type Job, type JobContext, LeaseLost } from './job.js';

/**
 * One pass over the jobs, without timers of its own: `runDueJobs` starts every job that is due.
 * Node drives it with timers (`JobRunner`, node-runner.ts); a Workers scheduled handler can call it
 * once per cron tick with a fresh state and then `releaseLeases`.
 */

/** What a runner remembers between passes. One per process (or per scheduled invocation). */
export interface JobsState {
  /** This process in leases: `[A-Za-z0-9_.:-]{1,128}`, unique per process. */
  readonly holder: string;
  /** When each job last started (or was found held elsewhere). */
  readonly lastStartMs: Map<string, number>;
  /** The runs in progress, by job: a job never runs twice at once in one process. */
  readonly running: Map<string, Promise<void>>;
  /** The singleton leases this holder took, by job, to give back at stop. */
  readonly leases: Map<string, Lease>;
  /** Aborted by stop: no new run starts, and running ones end at their next step. */
  readonly stopping: AbortController;
}

interface Lease {
  readonly resource: string;
  readonly ttlMs: number;
  readonly fencingToken: number;
  renewedAtMs: number;
  /** A renewal on its way, shared by the run's concurrent writes. */
  renewing?: Promise<void> | undefined;
}

export function jobsState(holder: string): JobsState {
  return {
    holder,
    lastStartMs: new Map(),
    running: new Map(),
    leases: new Map(),
    stopping: new AbortController(),
  };
}

/**
 * A singleton's lease lives three intervals (within lease_acquire's 100 ms .. 1 h): renewed every
 * run, it survives one late run; a dead holder's job is taken over within three intervals plus one.
 */
export function leaseTtlMs(intervalMs: number): number {
  return Math.min(3_600_000, Math.max(100, 3 * intervalMs));
}

/** The lease resource of a singleton job. */
export const leaseResource = (job: Job) => `job-${job.name}`;

/**
 * Starts every job due at `nowMs` (never run, or its interval passed since its last start) that is
 * not running; resolves when the runs it started have ended. Never rejects: a failing run is
 * logged and counted (`spicegate_job_runs_total`).
 */
export function runDueJobs(
  services: Services,
  jobs: readonly Job[],
  nowMs: number,
  state: JobsState,
): Promise<void> {
  const started: Promise<void>[] = [];
  for (const job of jobs) {
    if (state.stopping.signal.aborted) break;
    if (state.running.has(job.name)) continue;
    const last = state.lastStartMs.get(job.name);
    if (last !== undefined && nowMs - last < job.intervalMs) continue;
    state.lastStartMs.set(job.name, nowMs);
    const run = runJob(services, job, nowMs, state).finally(() => state.running.delete(job.name));
    state.running.set(job.name, run);
    started.push(run);
  }
  return Promise.all(started).then(() => undefined);
}

/** Gives back every lease this holder has (at stop), so another instance takes over at once. */
export async function releaseLeases(services: Services, state: JobsState): Promise<void> {
  for (const [job, lease] of state.leases) {
    state.leases.delete(job);
    await services.store
      .releaseLease({ resource: lease.resource, holder: state.holder })
      .catch((error: unknown) => services.log.warn({ job, err: error }, 'job lease not released'));
  }
}

async function runJob(services: Services, job: Job, nowMs: number, state: JobsState): Promise<void> {
  const { log, metrics, clock } = services;
  let lease: Lease | undefined;
  try {
    if (job.singleton) {
      lease = await takeLease(services, job, state);
      if (lease === undefined) return;
    }
    const held = lease;
    const ctx: JobContext = {
      services,
      holder: state.holder,
      startedAtMs: nowMs,
      fence: held === undefined ? async () => {} : () => fence(services, job, state, held),
      signal: state.stopping.signal,
    };
    log.debug({ job: job.name, holder: state.holder, fencingToken: lease?.fencingToken }, 'job started');
    await job.run(ctx);
    metrics.jobRuns.inc({ job: job.name, outcome: 'ok' });
    log.debug(
      {
        job: job.name,
        holder: state.holder,
        fencingToken: lease?.fencingToken,
        durationMs: clock.now() - nowMs,
      },
      'job run',
    );
  } catch (error) {
    if (error instanceof LeaseLost) {
      if (state.leases.get(job.name) === lease) state.leases.delete(job.name);
      metrics.jobLeaseLost.inc({ job: job.name });
      metrics.jobRuns.inc({ job: job.name, outcome: 'lease_lost' });
      log.warn(
        { job: job.name, holder: state.holder, fencingToken: lease?.fencingToken, status: error.status },
        'job lease lost: its writes stopped',
      );
      return;
    }
    metrics.jobRuns.inc({ job: job.name, outcome: 'failed' });
    log.error({ job: job.name, err: error }, 'job failed');
  }
}

/**
 * Takes the job's lease, or renews it when this holder has it (same token); undefined while
 * another holder has it.
 */
async function takeLease(services: Services, job: Job, state: JobsState): Promise<Lease | undefined> {
  const resource = leaseResource(job);
  const ttlMs = leaseTtlMs(job.intervalMs);
  const result = await services.store.acquireLease({ resource, holder: state.holder, ttlMs });
  if (result.status === 'INVALID_INPUT') throw new Error(`lease of job ${job.name} refused ${result.field}`);
  if (result.status === 'HELD') {
    state.leases.delete(job.name);
    services.log.debug({ job: job.name, heldBy: result.holder }, 'job lease held elsewhere');
    return undefined;
  }
  if (result.status === 'ACQUIRED') {
    services.log.info(
      { job: job.name, holder: state.holder, fencingToken: result.fencingToken },
      'job lease acquired',
    );
  }
  const lease: Lease = {
    resource,
    ttlMs,
    fencingToken: result.fencingToken,
    renewedAtMs: services.clock.now(),
  };
  state.leases.set(job.name, lease);
  return lease;
}

/**
 * The gate before each of a singleton's writes. A third of the TTL after the last renewal, the
 * lease is renewed first (so a run longer than its lease keeps it); then fencing_cas with the run's
 * token decides, last before the write: STALE once another holder took the lease or it expired.
 */
async function fence(services: Services, job: Job, state: JobsState, lease: Lease): Promise<void> {
  const { store, clock } = services;
  if (clock.now() - lease.renewedAtMs >= lease.ttlMs / 3) {
    lease.renewing ??= store
      .acquireLease({ resource: lease.resource, holder: state.holder, ttlMs: lease.ttlMs })
      .then((renewal) => {
        if (renewal.status === 'RENEWED' && renewal.fencingToken === lease.fencingToken) {
          lease.renewedAtMs = clock.now();
        } else if (renewal.status === 'ACQUIRED') {
          // It had expired and nobody took it: ours again, with a new token for the next run
          // (this run's token is refused below).
          state.leases.set(job.name, {
            resource: lease.resource,
            ttlMs: lease.ttlMs,
            fencingToken: renewal.fencingToken,
            renewedAtMs: clock.now(),
          });
        }
      })
      .finally(() => {
        lease.renewing = undefined;
      });
    await lease.renewing;
  }
  const cas = await store.fencingCas({
    resource: lease.resource,
    fencingToken: lease.fencingToken,
    holder: state.holder,
  });
  if (cas.status !== 'OK') throw new LeaseLost(job.name, cas.status);
}
