/**
 * npm run bench:boot — how long `spicegate serve` takes on embedded defaults, from spawn to the
 * first 200 on /health (liveness) and on /ready (database migrated), on a first start (empty
 * DATA_DIR) and on a restart. Prints the figures; asserts nothing.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const PORT = Number(process.env.BENCH_PORT ?? 8797);
const RUNS = Number(process.env.BENCH_RUNS ?? 3);

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

async function boot(dataDir: string): Promise<{ healthMs: number; readyMs: number }> {
  const startedAt = performance.now();
  const child = spawn(process.execPath, ['bin/spicegate.js', 'serve'], {
    env: {
      ...process.env,
      PORT: String(PORT),
      DATA_DIR: dataDir,
      DATABASE_URL: '',
      REDIS_URL: '',
      LOG_LEVEL: 'warn',
    },
    stdio: 'ignore',
  });
  try {
    await until200(`http://127.0.0.1:${PORT}/health`, startedAt + 30_000);
    const healthMs = performance.now() - startedAt;
    await until200(`http://127.0.0.1:${PORT}/ready`, startedAt + 30_000);
    const readyMs = performance.now() - startedAt;
    return { healthMs, readyMs };
  } finally {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }
}

const rows: string[] = [];
for (let run = 1; run <= RUNS; run += 1) {
  const dataDir = await mkdtemp(join(tmpdir(), 'sg-bench-boot-'));
  try {
    const first = await boot(dataDir);
    const restart = await boot(dataDir);
    rows.push(
      `run ${run}: first start /health ${first.healthMs.toFixed(0)} ms, /ready ${first.readyMs.toFixed(0)} ms; ` +
        `restart /health ${restart.healthMs.toFixed(0)} ms, /ready ${restart.readyMs.toFixed(0)} ms`,
    );
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}
console.log(rows.join('\n'));
