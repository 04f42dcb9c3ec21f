import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Services } from '../services.js';
import type { Job } from './job.js';
import { type JobsState, jobsState, releaseLeases, runDueJobs } from './runner.js';

// 1 s at most between passes: a job starts within a second of being due.
const MAX_TICK_MS = 1_000;

/** This process in leases: `host:pid:random`, in lease_acquire's alphabet and length. */
export function nodeHolder(): string {
  const host = hostname()
    .replace(/[^A-Za-z0-9_.-]/g, '_')
    .slice(0, 80);
  return `${host}:${process.pid}:${randomBytes(4).toString('hex')}`;
}

/**
 * Runs the jobs on Node: a pass (`runDueJobs`) at start, then every second (or the shortest job
 * interval, if shorter). `stop()` lets running jobs end at their next step and gives the leases
 * back, so another instance takes over at once.
 */
export class JobRunner {
  private readonly state: JobsState;
  private readonly tickMs: number;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stopped: Promise<void> | undefined;

  constructor(
    private readonly services: Services,
    private readonly jobs: readonly Job[],
    holder: string = nodeHolder(),
  ) {
    this.state = jobsState(holder);
    this.tickMs = Math.min(MAX_TICK_MS, ...jobs.map((job) => job.intervalMs));
  }

  get holder(): string {
    return this.state.holder;
  }

  start(): void {
    if (this.jobs.length === 0 || this.timer !== undefined || this.stopped !== undefined) return;
    this.services.log.info(
      { holder: this.state.holder, jobs: this.jobs.map((job) => job.name) },
      'background jobs started',
    );
    this.tick();
  }

  stop(): Promise<void> {
    this.stopped ??= (async () => {
      clearTimeout(this.timer);
      this.state.stopping.abort();
      await Promise.all(this.state.running.values());
      await releaseLeases(this.services, this.state);
    })();
    return this.stopped;
  }

  private tick(): void {
    if (this.stopped !== undefined) return;
    void runDueJobs(this.services, this.jobs, this.services.clock.now(), this.state);
    this.timer = setTimeout(() => this.tick(), this.tickMs);
  }
}
