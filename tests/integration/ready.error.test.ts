import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/observability/logger.js';
import { redisStore } from '../../src/store/index.js';
import { createHarness, type Harness } from '../support/harness.js';
import { freePort, startRedisServer } from '../support/redis-server.js';

interface ReadyError {
  error: {
    code: string;
    message: string;
    failed: string[];
    checks: Record<string, { ok: boolean; engine: string }>;
  };
}

describe('GET /ready with the store down', () => {
  let harness: Harness;
  beforeAll(async () => {
    // A port nobody listens on: every ping fails.
    const store = redisStore({ url: `redis://127.0.0.1:${await freePort()}`, log: silentLogger() });
    harness = await createHarness({ store });
  });
  afterAll(() => harness.close());

  it('answers 503 naming the store, and the database as fine', async () => {
    const response = await harness.request('/ready');
    expect(response.status).toBe(503);
    const body = (await response.json()) as ReadyError;
    expect(body.error.code).toBe('not_ready');
    expect(body.error.failed).toEqual(['store']);
    expect(body.error.message).toContain('store');
    expect(body.error.checks.database?.ok).toBe(true);
    expect(JSON.stringify(body)).not.toContain('ECONNREFUSED');
  });

  it('keeps /health at 200: liveness never touches the store', async () => {
    expect((await harness.request('/health')).status).toBe(200);
  });
});

describe('GET /ready when the store stops answering', () => {
  let harness: Harness;
  let redis: Awaited<ReturnType<typeof startRedisServer>>;
  beforeAll(async () => {
    redis = await startRedisServer();
    harness = await createHarness({ store: redisStore({ url: redis.url, log: silentLogger() }) });
  });
  afterAll(async () => {
    await harness.close();
    await redis.stop();
  });

  it('goes from 200 to 503 when Redis is frozen (SIGSTOP), and back when it resumes', async () => {
    expect((await harness.request('/ready')).status).toBe(200);
    redis.process.kill('SIGSTOP');
    try {
      const response = await harness.request('/ready');
      expect(response.status).toBe(503);
      expect(((await response.json()) as ReadyError).error.failed).toEqual(['store']);
    } finally {
      redis.process.kill('SIGCONT');
    }
    expect((await harness.request('/ready')).status).toBe(200);
  });
});

describe('GET /ready with the database down', () => {
  let harness: Harness;
  beforeAll(async () => {
    harness = await createHarness();
    // The file's database is gone from under the app (as in an outage): queries fail.
    await harness.close();
  });

  it('answers 503 naming the database', async () => {
    const response = await harness.request('/ready');
    expect(response.status).toBe(503);
    const body = (await response.json()) as ReadyError;
    expect(body.error.failed).toContain('database');
  });
});
