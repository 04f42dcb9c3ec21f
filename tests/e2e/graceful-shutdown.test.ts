import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { type DelayProxy, startDelayProxy } from '../support/delay-proxy.js';
import { type GatewayProcess, spawnSpicegate } from '../support/gateway-process.js';

/**
 * A request is made slow by holding back Redis's replies in a proxy (Redis itself is the real
 * one): GET /ready then waits on the store's PING while SIGTERM arrives.
 */
describe('SIGTERM with a slow request in flight', () => {
  let proxy: DelayProxy;
  let database: TestDatabase | undefined;
  let dataDir: string;
  let gateway: GatewayProcess;
  let url: string;

  beforeAll(async () => {
    proxy = await startDelayProxy(inject('redisUrl'));
    dataDir = await mkdtemp(join(tmpdir(), 'sg-shutdown-'));
    const env: Record<string, string> = {
      PORT: '0',
      DATA_DIR: dataDir,
      REDIS_URL: proxy.url,
      SHUTDOWN_TIMEOUT_MS: '10000',
    };
    const serverUrl = inject('databaseUrl');
    if (serverUrl !== '') {
      database = await createTestDatabase(serverUrl, { migrate: false });
      await database.handle.close();
      env.DATABASE_URL = database.url as string;
    }
    gateway = spawnSpicegate(['serve'], env);
    url = String((await gateway.waitForLog('listening')).url);
    await gateway.waitForLog('spicegate ready');
  });
  afterAll(async () => {
    gateway.kill();
    await proxy.close();
    await database?.drop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('lets the request complete, refuses new connections, then exits 0', async () => {
    expect((await fetch(`${url}/ready`)).status).toBe(200);

    // 250 ms: slow, but well inside the store's 500 ms command timeout, so the request succeeds.
    proxy.setDelay(250);
    const pingSent = once(proxy.events, 'clientData');
    const slow = fetch(`${url}/ready`).then(async (response) => ({
      status: response.status,
      body: (await response.json()) as { checks?: { store?: { ok: boolean } } },
      at: performance.now(),
    }));
    await pingSent;
    gateway.child.kill('SIGTERM');
    await gateway.waitForLog('shutting down: refusing new connections, draining');

    await expect(fetch(`${url}/health`)).rejects.toThrow();

    const response = await slow;
    expect(response.status).toBe(200);
    expect(response.body.checks?.store?.ok).toBe(true);

    const exit = await gateway.exited;
    expect(exit.code).toBe(0);
    expect(exit.at).toBeGreaterThanOrEqual(response.at);
    expect(
      gateway.lines.some(
        (line) => line.msg === 'shutdown deadline reached: remaining connections were closed',
      ),
    ).toBe(false);
  });
});
