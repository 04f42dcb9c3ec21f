import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createKey } from '../../src/keys/keys.js';
import { silentLogger } from '../../src/observability/logger.js';
import { redisStore } from '../../src/store/index.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { admitInput } from '../support/engines.js';
import { createHarnessOnOwnRedis, type Harness } from '../support/harness.js';
import type { RedisServer } from '../support/redis-server.js';
import { events, infer } from '../support/sse.js';
import { trpc } from '../support/trpc.js';

/**
 * An admit the store did not answer in time may still run when the store comes back: the gateway
 * cancels that reservation id in the background, and a cancel that arrives first leaves a tombstone
 * the late admit respects, so no tenant's credits stay reserved.
 */
describe('a store timeout during admission', () => {
  let harness: Harness & { redis: RedisServer };
  let raw: Redis;
  beforeAll(async () => {
    harness = await createHarnessOnOwnRedis({ config: { localModelTokens: 20 } });
    raw = new Redis(harness.redis.url);
  });
  afterAll(async () => {
    raw.disconnect();
    await harness.close();
  });

  async function fundedKey(index: number): Promise<{ tenantId: string; key: string }> {
    const tenantId = (await createTenant(harness.services, { name: `Paused ${index}`, tier: 4 })).id;
    const granted = await trpc(
      harness,
      harness.adminToken,
      'admin.credits.grant',
      { tenantId, grantId: `paused-${index}`, amountMicro: '1000000', reason: 'test' },
      'POST',
    );
    expect(granted.status).toBe(200);
    return { tenantId, key: (await createKey(harness.services, tenantId, { name: 'live' })).key };
  }

  /** One request read to its end: 503, or 200 with the stream settled (`done`). */
  async function answer(key: string): Promise<number | string> {
    const response = await infer(harness, key, { prompt: 'hello world', max_tokens: 10 });
    if (response.status !== 200) return response.status;
    return events(await response.text()).at(-1)?.type === 'done' ? 200 : 'unsettled';
  }

  it('a burst under CLIENT PAUSE answers 503 or settles, and once the store is back no credit stays reserved', async () => {
    const tenants = await Promise.all(Array.from({ length: 10 }, (_, i) => fundedKey(i)));
    // Warm: every key verified and every balance in the store before the pause.
    for (const { key } of tenants) expect(await answer(key)).toBe(200);

    // Longer than the store's command timeout (500 ms): the admits time out and run afterwards.
    const pauseEndsAt = Date.now() + 1_500;
    await raw.call('CLIENT', 'PAUSE', '1500', 'ALL');
    const answers = await Promise.all(
      Array.from({ length: 100 }, (_, i) => answer((tenants[i % tenants.length] as { key: string }).key)),
    );
    expect(answers.filter((status) => status !== 200 && status !== 503)).toEqual([]);
    expect(answers).toContain(503);

    await vi.waitFor(
      async () => {
        for (const { tenantId } of tenants) {
          const snapshot = await harness.services.store.snapshot(tenantId);
          expect(snapshot.reservedMicro).toBe(0n);
          expect(snapshot.availableMicro).toBe(snapshot.creditedMicro - snapshot.committedMicro);
        }
      },
      // Within 2 s of the store's return.
      { timeout: Math.max(100, pauseEndsAt + 2_000 - Date.now()), interval: 100 },
    );
  });

  it('a cancel that reaches the store before the late admit wins (two connections)', async () => {
    const { tenantId } = await fundedKey(100);
    const canceller = redisStore({ url: harness.redis.url, log: silentLogger() });
    const admitter = redisStore({ url: harness.redis.url, log: silentLogger() });
    try {
      const late = admitInput(tenantId, { nowMs: Date.now() });
      expect(
        await canceller.cancel({ tenantId, reservationId: late.reservationId, nowMs: late.nowMs }),
      ).toEqual({
        status: 'CANCELLED_BEFORE_ADMIT',
      });
      expect(await admitter.admit(late)).toEqual({ status: 'CANCELLED' });
      const snapshot = await admitter.snapshot(tenantId);
      expect(snapshot.reservedMicro).toBe(0n);
      expect(snapshot.availableMicro).toBe(1_000_000n);
    } finally {
      await canceller.close();
      await admitter.close();
    }
  });
});
