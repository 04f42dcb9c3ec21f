import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createLogger } from '../../src/observability/logger.js';
import { memoryStore, redisStore } from '../../src/store/index.js';
import { freePort, type RedisServer, startRedisServer } from '../support/redis-server.js';

describe('redis store', () => {
  it('pings the real Redis', async () => {
    const store = redisStore({ url: inject('redisUrl'), log: createLogger({ level: 'silent' }) });
    try {
      expect(store.engine).toBe('redis');
      await expect(store.ping()).resolves.toBeUndefined();
    } finally {
      await store.close();
    }
  });

  it('rejects a ping when nothing listens, instead of hanging', async () => {
    const store = redisStore({
      url: `redis://127.0.0.1:${await freePort()}`,
      log: createLogger({ level: 'silent' }),
    });
    try {
      await expect(store.ping()).rejects.toThrow();
    } finally {
      await store.close();
    }
  });

  it('close is idempotent', async () => {
    const store = redisStore({ url: inject('redisUrl'), log: createLogger({ level: 'silent' }) });
    await store.close();
    await expect(store.close()).resolves.toBeUndefined();
  });
});

describe('redis store when its Redis dies', () => {
  let redis: RedisServer;
  const lines: string[] = [];
  beforeAll(async () => {
    redis = await startRedisServer();
  });
  afterAll(() => redis.stop());

  it('survives the connection errors (no unhandled error event) and logs them', async () => {
    const log = createLogger({
      level: 'warn',
      destination: { write: (line: string) => void lines.push(line) },
    });
    const store = redisStore({ url: redis.url, log });
    try {
      await store.ping();
      await redis.stop();
      // Reconnect attempts now fail; without the store's 'error' listener each one would be an
      // unhandled 'error' event and crash this test process.
      await expect(store.ping()).rejects.toThrow();
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(lines.some((line) => line.includes('redis connection error'))).toBe(true);
    } finally {
      await store.close();
    }
  });
});

describe('memory store', () => {
  it('is the embedded engine and always answers', async () => {
    const store = memoryStore({ log: createLogger({ level: 'silent' }) });
    expect(store.engine).toBe('memory');
    await expect(store.ping()).resolves.toBeUndefined();
  });
});
