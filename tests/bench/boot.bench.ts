/**
 * npm run bench:boot — how long `spicegate serve` takes on embedded defaults, from spawn to the
 * first 200 on /health (liveness) and on /ready (database migrated), on a first start (empty
 * DATA_DIR) and on a restart (the same DATA_DIR). Prints each run, the medians, and where the
 * time went (the phases the server logs with 'spicegate ready'). Asserts nothing.
 * BENCH_BASELINE=<another checkout, installed> boots it too, alternating run by run, so a change
 * is compared on one noisy machine in one sitting. BENCH_REALTIME=1 runs the server under
 * `chrt -f 10` (root, util-linux): ahead of everything else on the machine, as if it were quiet;
 * this process then polls at `chrt -f 20`, or the server's own threads (WASM compilation, GC) would
 * keep it from seeing the answer (it did, by 0.1-0.3 s).
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';

const PORT = Number(process.env.BENCH_PORT ?? 8797);
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const BASELINE = process.env.BENCH_BASELINE;
const REALTIME = process.env.BENCH_REALTIME === '1';

interface Boot {
  healthMs: number;
  readyMs: number;
  /** The server process's CPU time (all threads) when /ready first answered, from /proc. */
  cpuMs: number | undefined;
  /** Its resident memory then, MiB (VmRSS). */
  rssMiB: number | undefined;
  /** The server's own start-up phases (src/observability/startup.ts), ms. */
  phases: Record<string, number>;
}

async function until200(url: string, deadlineMs: number): Promise<void> {
  for (;;) {
    try {
      if ((await fetch(url)).status === 200) return;
    } catch {
      // not listening yet
    }
    if (performance.now() > deadlineMs) throw new Error(`${url} never answered 200`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function boot(dataDir: string, project: string): Promise<Boot> {
  const startedAt = performance.now();
  const command = [process.execPath, 'bin/spicegate.js', 'serve'];
  // chrt execs the command: the child's pid is the server's.
  const [file, ...args] = REALTIME ? ['chrt', '-f', '10', ...command] : command;
  const child = spawn(file as string, args, {
    cwd: project,
    env: {
      ...process.env,
      PORT: String(PORT),
      DATA_DIR: dataDir,
      DATABASE_URL: '',
      REDIS_URL: '',
      LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const phases = new Promise<Record<string, number>>((resolve) => {
    let buffered = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      buffered += chunk;
      for (let end = buffered.indexOf('\n'); end >= 0; end = buffered.indexOf('\n')) {
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 1);
        if (!line.includes('"spicegate ready"')) continue;
        resolve((JSON.parse(line) as { startupMs?: Record<string, number> }).startupMs ?? {});
      }
    });
  });
  try {
    await until200(`http://127.0.0.1:${PORT}/health`, startedAt + 60_000);
    const healthMs = performance.now() - startedAt;
    await until200(`http://127.0.0.1:${PORT}/ready`, startedAt + 60_000);
    const readyMs = performance.now() - startedAt;
    const cpuMs = child.pid === undefined ? undefined : await cpuTimeMs(child.pid);
    const rssMiB = child.pid === undefined ? undefined : await residentMiB(child.pid);
    return { healthMs, readyMs, cpuMs, rssMiB, phases: await phases };
  } finally {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }
}

/** utime + stime of a process (Linux); a busy machine stretches wall time far more than this. */
async function cpuTimeMs(pid: number): Promise<number | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (stat === undefined) return undefined;
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14 and 15 of proc(5), in clock ticks (USER_HZ, 100 on Linux).
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

/** VmRSS of a process (Linux), MiB. */
async function residentMiB(pid: number): Promise<number | undefined> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => undefined);
  const kiB = status === undefined ? undefined : /^VmRSS:\s+(\d+) kB/m.exec(status)?.[1];
  return kiB === undefined ? undefined : Number(kiB) / 1024;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] ?? 0)
    : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}

/** Phases in the order a start meets them; `import` is the app's modules loading until it listens. */
function breakdown(boots: Boot[]): string {
  const rows = boots.map(({ phases }) => ({
    node: phases.node ?? 0,
    bundle: phases.bundle ?? 0,
    'import+listen': (phases.listening ?? 0) - (phases.node ?? 0) - (phases.bundle ?? 0),
    'pglite copy': phases['pglite-seed'] ?? 0,
    'pglite open': (phases.database ?? 0) - (phases['pglite-seed'] ?? 0),
    migrate: phases.migrate ?? 0,
    signer: phases.signer ?? 0,
    'services.start': phases.services ?? 0,
    ready: phases.sinceProcessStart ?? 0,
  }));
  const names = Object.keys(rows[0] ?? {}) as (keyof (typeof rows)[number])[];
  return names.map((name) => `${name} ${median(rows.map((row) => row[name])).toFixed(0)}`).join(', ');
}

async function measure(label: string, project: string, runs: Boot[][]): Promise<void> {
  const dataDir = await mkdtemp(join(tmpdir(), 'sg-bench-boot-'));
  try {
    const first = await boot(dataDir, project);
    const restart = await boot(dataDir, project);
    runs.push([first, restart]);
    const seeded = first.phases['pglite-seed'] === undefined ? 'initdb' : 'from the template';
    console.log(
      `${label} run ${runs.length}: first start (${seeded}) /health ${first.healthMs.toFixed(0)} ms, ` +
        `/ready ${first.readyMs.toFixed(0)} ms; restart /health ${restart.healthMs.toFixed(0)} ms, ` +
        `/ready ${restart.readyMs.toFixed(0)} ms`,
    );
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}

function summary(label: string, runs: Boot[][]): void {
  for (const [index, name] of ['first start', 'restart'].entries()) {
    const boots = runs.map((run) => run[index] as Boot);
    console.log(
      `${label} ${name}: median /health ${median(boots.map((b) => b.healthMs)).toFixed(0)} ms, ` +
        `/ready ${median(boots.map((b) => b.readyMs)).toFixed(0)} ms, ` +
        `CPU until ready ${median(boots.map((b) => b.cpuMs ?? Number.NaN)).toFixed(0)} ms, ` +
        `RSS at ready ${median(boots.map((b) => b.rssMiB ?? Number.NaN)).toFixed(0)} MiB (of ${boots.length})`,
    );
    if (boots.every((boot) => boot.phases.sinceProcessStart !== undefined))
      console.log(`  in the server, median ms: ${breakdown(boots)}`);
  }
}

function printLoad(): void {
  console.log(
    `load average ${loadavg()
      .map((load) => load.toFixed(2))
      .join(' ')}`,
  );
}

if (REALTIME) execFileSync('chrt', ['-f', '-p', '20', String(process.pid)]);
printLoad();
const current: Boot[][] = [];
const baseline: Boot[][] = [];
for (let run = 1; run <= RUNS; run += 1) {
  if (BASELINE !== undefined) await measure('baseline', BASELINE, baseline);
  await measure('this', process.cwd(), current);
}
if (BASELINE !== undefined) summary('baseline', baseline);
summary('this', current);
printLoad();
