import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cpusHere } from '../../bin/gc-threads.js';
import { type GatewayProcess, spawnSpicegate } from '../support/gateway-process.js';

/** Whether `pid` is still a running process. */
function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitUntilGone(pid: number, timeoutMs = 10_000): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (running(pid)) {
    if (performance.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return true;
}

describe('spicegate serve and GC_THREADS (bin/spicegate.js, bin/gc-threads.js)', () => {
  const started: { gateway: GatewayProcess; dataDir: string }[] = [];
  const serve = async (env: Record<string, string>, launcher: string[] = []) => {
    const dataDir = await mkdtemp(join(tmpdir(), 'sg-gc-'));
    const gateway = spawnSpicegate(['serve'], { PORT: '0', DATA_DIR: dataDir, ...env }, launcher);
    started.push({ gateway, dataDir });
    return gateway;
  };
  afterEach(async () => {
    for (const { gateway, dataDir } of started.splice(0)) {
      gateway.kill();
      await gateway.exited;
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('single: the server runs in a process of its own with --single-threaded-gc; SIGTERM to the command drains it and both end 0', async () => {
    const gateway = await serve({ GC_THREADS: 'single' });
    const ready = await gateway.waitForLog('spicegate ready');
    expect(ready.gc).toBe('single-threaded');
    const serverPid = ready.pid as number;
    expect(serverPid).not.toBe(gateway.child.pid);
    expect((await fetch(`${ready.url as string}/health`)).status).toBe(200);

    gateway.child.kill('SIGTERM');
    const { code } = await gateway.exited;
    expect(code).toBe(0);
    expect(gateway.lines.some((line) => line.msg === 'shutdown complete')).toBe(true);
    expect(await waitUntilGone(serverPid)).toBe(true);
  });

  it('single: a command killed outright takes its server down with it, gracefully', async () => {
    const gateway = await serve({ GC_THREADS: 'single' });
    const ready = await gateway.waitForLog('spicegate ready');
    const serverPid = ready.pid as number;
    gateway.child.kill('SIGKILL');
    await gateway.exited;
    expect(await waitUntilGone(serverPid)).toBe(true);
    expect(gateway.lines.some((line) => line.msg === 'shutdown complete')).toBe(true);
  });

  it('auto: single-threaded on one CPU (taskset), as this machine decides without it', async () => {
    const pinned = await serve({}, ['taskset', '-c', '0']);
    const pinnedReady = await pinned.waitForLog('spicegate ready');
    expect(pinnedReady.gc).toBe('single-threaded');
    expect(pinnedReady.pid).not.toBe(pinned.child.pid);

    const free = await serve({ GC_THREADS: 'auto' });
    const freeReady = await free.waitForLog('spicegate ready');
    const oneCpu = cpusHere() <= 1;
    expect(freeReady.gc).toBe(oneCpu ? 'single-threaded' : 'parallel');
    // Not run again where it need not be: the command is the server.
    if (!oneCpu) expect(freeReady.pid).toBe(free.child.pid);
  });

  it('parallel: never relaunched, even on one CPU', async () => {
    const gateway = await serve({ GC_THREADS: 'parallel' }, ['taskset', '-c', '0']);
    const ready = await gateway.waitForLog('spicegate ready');
    expect(ready.gc).toBe('parallel');
    expect(ready.pid).toBe(gateway.child.pid);
  });

  it('a bad value exits 2 with one line naming GC_THREADS, before anything starts', async () => {
    const gateway = await serve({ GC_THREADS: 'bogus' });
    const { code } = await gateway.exited;
    expect(code).toBe(2);
    const lines = gateway.stderr().trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toBe(
      'spicegate: invalid configuration: GC_THREADS must be one of auto, single, parallel (got "bogus")',
    );
    expect(gateway.lines).toHaveLength(0);
  });
});
