import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Job, JobContext } from '../../src/jobs/job.js';
import { JobRunner } from '../../src/jobs/node-runner.js';
import { jobsState, leaseTtlMs, releaseLeases, runDueJobs } from '../../src/jobs/runner.js';
import { createHarness, type Harness } from '../support/harness.js';

/**
 * The jobs runner on the real store (Redis): one pass, due times, leases taken, renewed and lost,
 * fenced writes, stop. Two "instances" are two runner states (two holders) over one store, as two
 * processes would be; the e2e file tests/e2e/jobs.worker.test.ts does it with real processes.
 */
let harness: Harness;
beforeAll(async () => {
  harness = await createHarness();
});
afterAll(() => harness.close());

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
async function until(check: () => boolean): Promise<void> {
  while (!check()) await sleep(5);
}
const holder = (name: string) => `${name}:${randomBytes(4).toString('hex')}`;
const jobName = (stem: string) => `${stem}-${randomBytes(4).toString('hex')}`;

/** A job that records each run (and its writes, each after a fence). */
function recordingJob(options: { singleton: boolean; intervalMs?: number; writes?: number }) {
  const runs: string[] = [];
  const job: Job = {
    name: jobName('rec'),
    intervalMs: options.intervalMs ?? 1_000,
    singleton: options.singleton,
    run: async (ctx) => {
      for (let write = 0; write < (options.writes ?? 1); write += 1) {
        await ctx.fence();
        runs.push(ctx.holder);
      }
    },
  };
  return { job, runs };
}

/** Resolves a gate the test opens later. */
function gate() {
  let open: () => void = () => undefined;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

async function metric(name: string): Promise<string> {
  return harness.services.metrics.registry.getSingleMetricAsString(name);
}

function logsOf(msg: string, job: string) {
  return harness.logs.filter((line) => line.msg === msg && line.job === job);
}

describe('one pass (runDueJobs)', () => {
  it('runs each due job once, again only after its interval, and never twice at once', async () => {
    const every = recordingJob({ singleton: false, intervalMs: 1_000 });
    let release: () => void = () => undefined;
    let slowRuns = 0;
    const slow: Job = {
      name: jobName('slow'),
      intervalMs: 10,
      singleton: false,
      run: async () => {
        slowRuns += 1;
        await new Promise<void>((resolve) => {
          release = resolve;
        });
      },
    };
    const state = jobsState(holder('a'));
    const t0 = 1_000_000;
    await runDueJobs(harness.services, [every.job], t0, state);
    await runDueJobs(harness.services, [every.job], t0 + 999, state);
    expect(every.runs).toHaveLength(1);
    await runDueJobs(harness.services, [every.job], t0 + 1_000, state);
    expect(every.runs).toHaveLength(2);

    const slowPass = runDueJobs(harness.services, [slow], t0, state);
    // Due again by its interval, but still running: not started a second time.
    await runDueJobs(harness.services, [slow], t0 + 500, state);
    expect(slowRuns).toBe(1);
    release();
    await slowPass;
    // Ended: the next pass starts it again.
    const next = runDueJobs(harness.services, [slow], t0 + 1_000, state);
    expect(slowRuns).toBe(2);
    release();
    await next;
  });

  it('a job that is not a singleton takes no lease and its fence lets every write through', async () => {
    const { job, runs } = recordingJob({ singleton: false, writes: 3 });
    await runDueJobs(harness.services, [job], Date.now(), jobsState(holder('a')));
    await runDueJobs(harness.services, [job], Date.now(), jobsState(holder('b')));
    expect(runs).toHaveLength(6);
    expect(
      await harness.services.store.acquireLease({
        resource: `job-${job.name}`,
        holder: 'probe',
        ttlMs: 1_000,
      }),
    ).toEqual({ status: 'ACQUIRED', fencingToken: 1 });
  });

  it('a failing run is logged and counted, and the next pass runs the job again', async () => {
    let calls = 0;
    const job: Job = {
      name: jobName('fails'),
      intervalMs: 1_000,
      singleton: false,
      run: async () => {
        calls += 1;
        throw new Error('planned failure');
      },
    };
    const state = jobsState(holder('a'));
    await runDueJobs(harness.services, [job], 0, state);
    await runDueJobs(harness.services, [job], 1_000, state);
    expect(calls).toBe(2);
    expect(logsOf('job failed', job.name)).toHaveLength(2);
    expect(await metric('spicegate_job_runs_total')).toContain(
      `spicegate_job_runs_total{job="${job.name}",outcome="failed"} 2`,
    );
  });
});

describe('singleton jobs under a lease', () => {
  it('only the holder runs it; it renews the lease each run and keeps its token', async () => {
    const { job, runs } = recordingJob({ singleton: true, intervalMs: 1_000 });
    const a = jobsState(holder('a'));
    const b = jobsState(holder('b'));
    for (let cycle = 0; cycle < 3; cycle += 1) {
      const now = Date.now() + cycle * 1_000;
      await runDueJobs(harness.services, [job], now, a);
      await runDueJobs(harness.services, [job], now, b);
    }
    expect(runs).toEqual([a.holder, a.holder, a.holder]);
    // Acquired once (token 1), renewed by the two later runs.
    expect(logsOf('job lease acquired', job.name).map((line) => [line.holder, line.fencingToken])).toEqual([
      [a.holder, 1],
    ]);
    expect(logsOf('job run', job.name).map((line) => line.fencingToken)).toEqual([1, 1, 1]);
    expect(logsOf('job lease held elsewhere', job.name)).toHaveLength(3);
  });

  it('a holder paused past its lease has its writes refused (STALE) while the new holder writes', async () => {
    // 100 ms interval: a 300 ms lease.
    const writes: string[] = [];
    const paused = gate();
    const job: Job = {
      name: jobName('fenced'),
      intervalMs: 100,
      singleton: true,
      run: async (ctx: JobContext) => {
        if (ctx.holder.startsWith('a:')) await paused.opened;
        await ctx.fence();
        writes.push(ctx.holder);
      },
    };
    const a = jobsState(holder('a'));
    const b = jobsState(holder('b'));
    const aRun = runDueJobs(harness.services, [job], Date.now(), a);
    // a holds the lease but is stuck before its write; b is refused while the lease lives.
    await until(() => logsOf('job lease acquired', job.name).length === 1);
    await runDueJobs(harness.services, [job], Date.now(), b);
    expect(writes).toEqual([]);
    await sleep(leaseTtlMs(job.intervalMs) + 50);
    await runDueJobs(harness.services, [job], Date.now() + 1_000, b);
    expect(writes).toEqual([b.holder]);
    paused.open();
    await aRun;
    expect(writes).toEqual([b.holder]);
    expect(logsOf('job lease lost: its writes stopped', job.name)).toEqual([
      expect.objectContaining({ holder: a.holder, fencingToken: 1, status: 'STALE' }),
    ]);
    expect(await metric('spicegate_job_lease_lost_total')).toContain(
      `spicegate_job_lease_lost_total{job="${job.name}"} 1`,
    );
    // a's next pass finds the lease held by b and does not run.
    await runDueJobs(harness.services, [job], Date.now() + 2_000, a);
    expect(writes).toEqual([b.holder]);
  });

  it('a run longer than its lease keeps it by renewing as it writes', async () => {
    // 100 ms interval: a 300 ms lease; the run writes for ~600 ms.
    const { job, runs } = recordingJob({ singleton: true, intervalMs: 100 });
    const long: Job = {
      ...job,
      run: async (ctx) => {
        for (let write = 0; write < 12; write += 1) {
          await ctx.fence();
          runs.push(ctx.holder);
          await sleep(50);
        }
      },
    };
    const a = jobsState(holder('a'));
    const b = jobsState(holder('b'));
    const aRun = runDueJobs(harness.services, [long], Date.now(), a);
    let bTries = 0;
    while (runs.length < 12) {
      await runDueJobs(harness.services, [long], Date.now() + bTries * 1_000, b);
      bTries += 1;
      await sleep(40);
    }
    await aRun;
    expect(runs).toEqual(Array.from({ length: 12 }, () => a.holder));
    expect(bTries).toBeGreaterThan(5);
    expect(logsOf('job lease lost: its writes stopped', long.name)).toEqual([]);
  });

  it('a stopped runner gives its lease back: another instance takes the job at once', async () => {
    const { job, runs } = recordingJob({ singleton: true, intervalMs: 60_000 });
    const first = new JobRunner(harness.services, [job], holder('first'));
    first.start();
    await until(() => runs.length > 0);
    await first.stop();
    const second = jobsState(holder('second'));
    await runDueJobs(harness.services, [job], Date.now(), second);
    expect(runs).toEqual([first.holder, second.holder]);
    expect(logsOf('job lease acquired', job.name).map((line) => line.fencingToken)).toEqual([1, 2]);
    await releaseLeases(harness.services, second);
  });

  it('stop() waits for a running job, which sees the abort signal, and starts nothing after', async () => {
    let sawAbort = false;
    let runsStarted = 0;
    const job: Job = {
      name: jobName('abortable'),
      intervalMs: 10,
      singleton: true,
      run: async (ctx) => {
        runsStarted += 1;
        while (!ctx.signal.aborted) await sleep(5);
        sawAbort = true;
      },
    };
    const runner = new JobRunner(harness.services, [job], holder('stopping'));
    runner.start();
    await until(() => runsStarted > 0);
    await runner.stop();
    expect(sawAbort).toBe(true);
    await sleep(50);
    expect(runsStarted).toBe(1);
    // Released at stop: free for anyone.
    expect(
      await harness.services.store.acquireLease({
        resource: `job-${job.name}`,
        holder: 'probe',
        ttlMs: 1_000,
      }),
    ).toEqual({ status: 'ACQUIRED', fencingToken: 2 });
  });
});
