import { type ChildProcess, spawn } from 'node:child_process';

export interface GatewayProcess {
  child: ChildProcess;
  /** Every stdout line, parsed when it is JSON. */
  lines: Record<string, unknown>[];
  stderr(): string;
  /** Resolves with the first log record whose msg is `msg` (already written or still to come). */
  waitForLog(msg: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  kill(): void;
}

/** Variables a test must not inherit from the runner, so "embedded defaults" really are. */
const INHERITED_BLOCKLIST = [
  'DATABASE_URL',
  'REDIS_URL',
  'ADMIN_TOKEN',
  'PORT',
  'HOST',
  'DATA_DIR',
  'LOG_LEVEL',
];

/** Runs `spicegate <args>` (the real bin, as `npm start` does) with a controlled environment. */
export function spawnSpicegate(args: string[], env: Record<string, string>): GatewayProcess {
  const baseEnv = Object.fromEntries(
    Object.entries(process.env).filter(
      ([name]) => !INHERITED_BLOCKLIST.includes(name) && !name.startsWith('VITEST'),
    ),
  );
  const child = spawn(process.execPath, ['bin/spicegate.js', ...args], {
    env: { ...baseEnv, NODE_ENV: 'production', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: Record<string, unknown>[] = [];
  const waiters: { msg: string; resolve: (record: Record<string, unknown>) => void }[] = [];
  let buffered = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    let newline = buffered.indexOf('\n');
    while (newline >= 0) {
      const text = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      newline = buffered.indexOf('\n');
      let record: Record<string, unknown>;
      try {
        record = JSON.parse(text) as Record<string, unknown>;
      } catch {
        record = { text };
      }
      lines.push(record);
      for (const waiter of waiters.filter((w) => w.msg === record.msg)) waiter.resolve(record);
    }
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>(
    (resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal, at: performance.now() }));
    },
  );

  return {
    child,
    lines,
    stderr: () => stderr,
    exited,
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
    waitForLog: (msg, timeoutMs = 30_000) => {
      const seen = lines.find((record) => record.msg === msg);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no "${msg}" log line after ${timeoutMs} ms; stderr: ${stderr}`)),
          timeoutMs,
        );
        exited.then(({ code }) =>
          reject(new Error(`exited (${code}) before logging "${msg}"; stderr: ${stderr}`)),
        );
        waiters.push({
          msg,
          resolve: (record) => {
            clearTimeout(timer);
            resolve(record);
          },
        });
      });
    },
  };
}
