import type { Services } from '../services.js';

/**
 * A background job (DESIGN.md §1 "jobs"): the reaper, unsettled spend, signing maintenance… A job
 * is one run's work; when it runs, and under which lease, is the runner's business
 * (src/jobs/runner.ts), so the same job runs from Node's timers or a Workers scheduled handler.
 * A job uses no timers of its own beyond a timeout it clears.
 */
export interface Job {
  /** Lower-case words and dashes; a singleton's lease is the resource `job-<name>`. */
  readonly name: string;
  /** From the start of one run to the start of the next; runs of one job never overlap. */
  readonly intervalMs: number;
  /**
   * true: one instance at a time runs it, under a lease renewed each run, its writes fenced (the
   * reaper). false: every instance runs it for itself (signing key refresh).
   */
  readonly singleton: boolean;
  run(ctx: JobContext): Promise<void>;
}

export interface JobContext {
  readonly services: Services;
  /** This process in leases and logs (`host:pid:random` on Node). */
  readonly holder: string;
  /** When the run started (services.clock). */
  readonly startedAtMs: number;
  /**
   * Call before each write. A singleton's run passes through fencing_cas with its lease's token
   * (renewing the lease as a long run goes on) and throws LeaseLost once the lease is no longer its
   * own; the job must then stop writing (let it propagate). Other jobs: resolves at once.
   */
  fence(): Promise<void>;
  /** Aborted when the runner stops: a long run ends at its next step. */
  readonly signal: AbortSignal;
}

/** A singleton's lease is no longer this run's (it expired, or another holder took it over). */
export class LeaseLost extends Error {
  constructor(
    readonly job: string,
    /** What fencing_cas answered: STALE, or CORRUPT (a stored value it cannot read). */
    readonly status: string,
  ) {
    super(`job ${job} lost its lease (${status})`);
    this.name = 'LeaseLost';
  }
}
