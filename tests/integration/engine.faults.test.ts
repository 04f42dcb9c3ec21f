import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/observability/logger.js';
import { StoreUnavailable } from '../../src/store/errors.js';
import { redisRunner } from '../../src/store/redis.js';
import { createStore } from '../../src/store/typed-store.js';
import { admitInput, startBalance, uniqueTenant } from '../support/engines.js';
import { type RedisServer, startRedisServer } from '../support/redis-server.js';

/** Faults on a Redis of this file's own (its own port), never the shared one. */
describe('the redis engine under faults', () => {
  let redis: RedisServer;
  let runner: ReturnType<typeof redisRunner>;
  let store: ReturnType<typeof createStore>;
  const tenantId = uniqueTenant();

  beforeAll(async () => {
    redis = await startRedisServer();
    runner = redisRunner({ url: redis.url, log: createLogger({ level: 'silent' }) });
    store = createStore(runner, { log: createLogger({ level: 'silent' }) });
    await startBalance(store, tenantId);
    await store.credit({ tenantId, grantId: 'g', amountMicro: 1_000_000n });
  });
  afterAll(async () => {
    await runner.close();
    await redis.stop();
  });

  it('recovers from SCRIPT FLUSH by itself (NOSCRIPT → EVAL)', async () => {
    expect((await store.admit(admitInput(tenantId))).status).toBe('ADMITTED');
    await runner.client.script('FLUSH');
    expect((await store.admit(admitInput(tenantId))).status).toBe('ADMITTED');
    // …and the script is cached again: EVALSHA alone works.
    const cached = (await runner.client.script(
      'EXISTS',
      (
        await import('../../src/store/scripts.generated.js')
      ).SCRIPTS.admit.sha1,
    )) as number[];
    expect(cached).toEqual([1]);
  });

  // How long the answer takes (the contract's 600 ms) is a figure of `npm run bench:engine`.
  it('a frozen Redis (SIGSTOP) is StoreUnavailable (503 store_unavailable), never a denial', async () => {
    redis.process.kill('SIGSTOP');
    try {
      const error = await store.admit(admitInput(tenantId)).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StoreUnavailable);
      expect(error).toMatchObject({ code: 'store_unavailable', status: 503 });
    } finally {
      redis.process.kill('SIGCONT');
    }
    await waitUntilAnswering();
  });

  it('a reply that came while the event loop was blocked past the timeout is not an outage', async () => {
    // A burst (1,000 streams at once) or a major GC can hold the loop longer than the 500 ms
    // command timeout while Redis has long answered: the answer must win, not the late timer.
    const admitted = store.admit(admitInput(tenantId));
    const blockedUntil = performance.now() + 800;
    while (performance.now() < blockedUntil) {
      // busy: the reply arrives in the socket meanwhile, unread
    }
    expect((await admitted).status).toBe('ADMITTED');
  });

  it('a stopped Redis is StoreUnavailable, and calls succeed again once it restarts', async () => {
    const { port } = redis;
    await redis.stop();
    const error = await store.admit(admitInput(tenantId)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailable);
    expect(error).toMatchObject({ code: 'store_unavailable', status: 503 });
    await expect(store.snapshot(tenantId)).rejects.toBeInstanceOf(StoreUnavailable);

    redis = await startRedisServer({ port });
    await waitUntilAnswering();
    // A fresh Redis (no persistence): the script cache is empty too, and the calls still work;
    // the balance is gone, so it is rebuilt (here from nothing) before a grant applies.
    expect(await store.credit({ tenantId, grantId: 'after-restart', amountMicro: 10n })).toEqual({
      status: 'HYDRATE',
    });
    await startBalance(store, tenantId);
    expect(await store.credit({ tenantId, grantId: 'after-restart', amountMicro: 10n })).toMatchObject({
      status: 'CREDITED',
      creditedMicro: 10n,
    });
  });

  async function waitUntilAnswering(): Promise<void> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        await store.snapshot(tenantId);
        return;
      } catch (error) {
        if (!(error instanceof StoreUnavailable) || Date.now() > deadline) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  }
});
