import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signingKeys } from '../../db/schema/index.js';
import { silentLogger } from '../../src/observability/logger.js';
import { redisStore } from '../../src/store/index.js';
import { createHarness, type Harness } from '../support/harness.js';
import { freePort } from '../support/redis-server.js';

describe('GET /.well-known/jwks.json', () => {
  let harness: Harness;
  beforeAll(async () => {
    // The store is down for this whole file: the JWKS must not need it.
    const deadStore = redisStore({ url: `redis://127.0.0.1:${await freePort()}`, log: silentLogger() });
    harness = await createHarness({ store: deadStore });
  });
  afterAll(() => harness.close());

  it('serves the active public key, cacheable, with a strong ETag, while the store is down', async () => {
    expect((await harness.request('/ready')).status).toBe(503);
    const response = await harness.request('/.well-known/jwks.json');
    expect(response.status).toBe(200);
    expect(response.headers.get('cache-control')).toBe('public, max-age=300');
    expect(response.headers.get('etag')).toMatch(/^"[A-Za-z0-9_-]{43}"$/);
    const jwks = (await response.json()) as { keys: Record<string, string>[] };
    const active = harness.services.signing.health().activeKid;
    expect(jwks.keys).toEqual([
      {
        kty: 'EC',
        crv: 'P-256',
        x: expect.any(String),
        y: expect.any(String),
        kid: active,
        alg: 'ES256',
        use: 'sig',
      },
    ]);
  });

  it('never contains a private member, even one that found its way into the table', async () => {
    await harness.services.signing.rotate();
    // A careless write stored a private member; publication must still strip it.
    const [row] = await harness.db.select().from(signingKeys).limit(1);
    await harness.db
      .update(signingKeys)
      .set({ publicJwk: { ...(row?.publicJwk ?? {}), d: 'private-scalar' } })
      .where(eq(signingKeys.kid, row?.kid ?? ''));
    await harness.services.signing.refresh();
    const text = await (await harness.request('/.well-known/jwks.json')).text();
    const jwks = JSON.parse(text) as { keys: Record<string, unknown>[] };
    expect(jwks.keys).toHaveLength(2);
    for (const key of jwks.keys)
      expect(Object.keys(key).sort()).toEqual(['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
    expect(text).not.toMatch(/"d"/);
    expect(text).not.toContain('private-scalar');
  });

  it('answers 304 to a matching If-None-Match and 200 to a stale one', async () => {
    const first = await harness.request('/.well-known/jwks.json');
    const etag = first.headers.get('etag') as string;
    const again = await harness.request('/.well-known/jwks.json', { headers: { 'if-none-match': etag } });
    expect(again.status).toBe(304);
    expect(await again.text()).toBe('');
    const stale = await harness.request('/.well-known/jwks.json', {
      headers: { 'if-none-match': '"something-else"' },
    });
    expect(stale.status).toBe(200);
  });
});

describe('GET /.well-known/jwks.json under a flood', () => {
  let flooded: Harness;
  beforeAll(async () => {
    flooded = await createHarness({ limits: 'production' });
  });
  afterAll(() => flooded.close());

  it('answers 429 with Retry-After once one address passes 100 requests a minute', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 101; i += 1) {
      statuses.push(
        (await flooded.request('/.well-known/jwks.json', { headers: { 'x-forwarded-for': '203.0.113.9' } }))
          .status,
      );
    }
    expect(statuses.slice(0, 100).every((status) => status === 200)).toBe(true);
    const denied = await flooded.request('/.well-known/jwks.json', {
      headers: { 'x-forwarded-for': '203.0.113.9' },
    });
    expect(denied.status).toBe(429);
    expect(Number(denied.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(((await denied.json()) as { error: { code: string; dimension: string } }).error).toMatchObject({
      code: 'rate_limited',
      dimension: 'ip',
    });
  });
});
