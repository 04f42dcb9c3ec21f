import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { freePort } from './redis-server.js';

export interface WranglerDev {
  url: string;
  /** What wrangler and the Worker printed so far (for a failure's message). */
  output(): string;
  stop(): Promise<void>;
}

/**
 * `wrangler dev --local` (workerd, offline) on a free loopback port, building the project's
 * wrangler.toml with `vars` as the Worker's secrets (a `.dev.vars` file, as a deployer would write
 * one). Runs from a scratch directory (its config, `.dev.vars` and `.wrangler` state), so nothing
 * is left in the work tree; `/__scheduled` triggers the cron handler.
 */
export async function startWranglerDev(vars: Record<string, string>): Promise<WranglerDev> {
  const dir = await mkdtemp(join(tmpdir(), 'sg-wrangler-'));
  const config = await readFile('wrangler.toml', 'utf8');
  const entry = resolve('src/entry/worker.ts');
  await writeFile(
    join(dir, 'wrangler.toml'),
    config.replace(/^main = .*$/m, `main = ${JSON.stringify(entry)}`),
  );
  await writeFile(
    join(dir, '.dev.vars'),
    Object.entries(vars)
      .map(([name, value]) => `${name}='${value}'`)
      .join('\n'),
  );
  const port = await freePort();
  const child: ChildProcess = spawn(
    resolve('node_modules/.bin/wrangler'),
    [
      'dev',
      '--local',
      '--ip',
      '127.0.0.1',
      '--port',
      String(port),
      '--inspector-port',
      String(await freePort()),
      '--test-scheduled',
      '--show-interactive-dev-session=false',
      '--log-level',
      'warn',
    ],
    {
      cwd: dir,
      // Its own process group: wrangler starts workerd, and both go at stop().
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, WRANGLER_SEND_METRICS: 'false', CI: 'true', NO_COLOR: '1' },
    },
  );
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  const exited = new Promise<void>((resolveExit) => child.once('exit', () => resolveExit()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      process.kill(-child.pid, 'SIGTERM');
      const killed = setTimeout(() => child.pid !== undefined && process.kill(-child.pid, 'SIGKILL'), 5_000);
      await exited;
      clearTimeout(killed);
    }
    await rm(dir, { recursive: true, force: true });
  };
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`wrangler dev exited: ${output}`);
    }
    try {
      if ((await fetch(`${url}/health`)).status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`wrangler dev did not answer /health within 60 s: ${output}`);
    }
    await new Promise((resolveWait) => setTimeout(resolveWait, 100));
  }
  return { url, output: () => output, stop };
}
