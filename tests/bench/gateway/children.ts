import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

/**
 * Every process bench:gateway starts, so that all of them die with it: on a normal end, an error,
 * SIGINT or SIGTERM.
 */
const children = new Set<ChildProcess>();

export function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

export function killAll(): void {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

process.once('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killAll();
    process.exit(130);
  });
}

export interface Helper {
  child: ChildProcess;
  pid: number;
  port: number;
  url: string;
  stop(): Promise<void>;
}

/**
 * Runs one of this folder's helper servers (`file`, a .ts module) in its own Node process through
 * tsx — as `bin/spicegate.js` runs the gateway — and resolves once it prints `{"port":n}`.
 */
export async function startHelper(
  file: string,
  env: Record<string, string>,
  nodeFlags: string[] = [],
): Promise<Helper> {
  const child = track(
    spawn(process.execPath, [...nodeFlags, '--import', 'tsx', new URL(file, import.meta.url).pathname], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    }),
  );
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${file} did not start within 20 s`)), 20_000);
    child.once('exit', (code) => reject(new Error(`${file} exited (${code}) before listening`)));
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).once('line', (line) => {
      clearTimeout(timer);
      resolve((JSON.parse(line) as { port: number }).port);
    });
  });
  return {
    child,
    pid: child.pid as number,
    port,
    url: `http://127.0.0.1:${port}`,
    stop: () => stopChild(child, 'SIGKILL'),
  };
}

/** Sends `signal` and waits for the exit. */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  await exited;
}
