import { randomBytes } from 'node:crypto';
import { Ratelimit } from '@upstash/ratelimit';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { ioredisRatelimitAdapter, redisWindows } from '../../src/limits/ioredis-ratelimit-adapter.js';
import { createPreAuthLimiter, type PreAuthLimiter } from '../../src/limits/preauth.js';
import { createLogger } from '../../src/observability/logger.js';
import { redisOptions } from '../../src/store/redis.js';
import { createHarness, type Harness } from '../support/harness.js';
import { deleteKeysWithPrefix } from '../support/redis-cleanup.js';
import { type RedisServer, startRedisServer } from '../support/redis-server.js';
import { serve } from '../support/serve.js';

type LogRecord = Record<string, unknown> & { msg?: string };
interface ErrorBody {
  error: { code: string; message: string; requestId: string } & Record<string, unknown>;
}

const sharedUrl = inject('redisUrl');
const keyPrefix = `sgtest:${randomBytes(6).toString('hex')}:`;
const logs: LogRecord[] = [];
const log = createLogger({
  level: 'debug',
  destination: { write: (line: string) => void logs.push(JSON.parse(line) as LogRecord) },
});
const clients: Redis[] = [];
let own: RedisServer;

function connect(url: string): Redis {
  const client = new Redis(url, redisOptions(keyPrefix));
  client.on('error', () => {});
  clients.push(client);
  return client;
}

// The first gateway owns this file's database; every other one shares it (and its signing keys)
// with a pre-auth limiter of its own.
let first: Harness;
const gateways: Harness[] = [];
beforeAll(async () => {
  // A Redis of this file's own, for command counting, SCRIPT FLUSH and stopping it.
  own = await startRedisServer();
  first = await createHarness();
});
afterAll(async () => {
  for (const gateway of gateways) await gateway.close();
  await first.close();
  for (const client of clients) client.disconnect();
  await own.stop();
  await deleteKeysWithPrefix(sharedUrl, keyPrefix);
});

/** The whole gateway with `limiter` as its pre-auth limit. */
async function gatewayWith(limiter: PreAuthLimiter, config: Partial<Config> = {}): Promise<Harness> {
  const gateway = await createHarness({ shareWith: first, preAuth: limiter, config });
  gateways.push(gateway);
  return gateway;
}

/** GET the JWKS as @hono/node-server would hand it over from the TCP peer `socket` (none: no address). */
async function get(
  gateway: Harness,
  socket: string | undefined,
  headers: Record<string, string> = {},
): Promise<Response> {
  return socket === undefined
    ? gateway.request('/.well-known/jwks.json', { headers })
    : gateway.requestFrom(socket, '/.well-known/jwks.json', { headers });
}

let sequence = 0;
/** An address no other test in this file uses (TEST-NET-2, 198.51.100.0/24 and beyond). */
function freshIp(): string {
  sequence += 1;
  return `198.51.${100 + Math.floor(sequence / 250)}.${(sequence % 250) + 1}`;
}

/**
 * The sliding window counts part of the previous minute: a run that straddles a minute boundary
 * would see a slightly different limit. Start each counting test well inside a minute.
 */
async function awayFromWindowEdge(): Promise<void> {
  const intoWindow = Date.now() % 60_000;
  if (intoWindow > 55_000) await new Promise((resolve) => setTimeout(resolve, 60_000 - intoWindow + 100));
}

async function commandCalls(client: Redis): Promise<{ eval: number; evalsha: number }> {
  const stats = await client.info('commandstats');
  const calls = (name: string) =>
    Number(new RegExp(`^cmdstat_${name}:calls=(\\d+)`, 'm').exec(stats)?.[1] ?? 0);
  return { eval: calls('eval'), evalsha: calls('evalsha') };
}

async function scriptCalls(client: Redis): Promise<number> {
  const { eval: evals, evalsha } = await commandCalls(client);
  return evals + evalsha;
}

async function statuses(responses: Promise<Response>[]): Promise<number[]> {
  return (await Promise.all(responses)).map((response) => response.status);
}

describe('the ioredis adapter runs the library on Redis 7', () => {
  it("strips the allow-key-locking shebang Redis 7 refuses and reuses the library's hashes", async () => {
    const client = connect(own.url);
    const shebang = '#!lua flags=allow-key-locking\nreturn ARGV[1]';
    await expect(client.eval(shebang, 0, 'x')).rejects.toThrow(/allow-key-locking/);

    const adapter = ioredisRatelimitAdapter(client);
    const libraryHash = '74740bb3d7792848093cdef586b6b6037c455fd6';
    // Unknown hash: NOSCRIPT, so the library sends the source.
    await expect(adapter.evalsha(libraryHash, [], [])).rejects.toThrow(/NOSCRIPT/);
    await expect(adapter.eval(shebang, [], [42])).resolves.toBe('42');
  });

  it('a real limit() round trip: EVAL once, then EVALSHA; recovers after SCRIPT FLUSH', async () => {
    await awayFromWindowEdge();
    const client = connect(own.url);
    const ratelimit = new Ratelimit({
      redis: ioredisRatelimitAdapter(client).asRatelimitRedis(),
      limiter: Ratelimit.slidingWindow(3, '1 m'),
      prefix: 'adapter',
      ephemeralCache: false,
      analytics: false,
      enableProtection: false,
      enableTelemetry: false,
    });
    await client.config('RESETSTAT');
    const results = [];
    for (let i = 0; i < 4; i += 1) results.push(await ratelimit.limit('ip4:192.0.2.1'));
    // The adapter answers the first, unknown hash with NOSCRIPT itself: one EVAL, then EVALSHAs.
    expect(await commandCalls(client)).toEqual({ eval: 1, evalsha: 3 });
    expect(results.map((result) => [result.success, result.remaining, result.reason])).toEqual([
      [true, 2, undefined],
      [true, 1, undefined],
      [true, 0, undefined],
      [false, 0, undefined],
    ]);
    // KEYS patterns do not get ioredis's keyPrefix; the keys the script wrote do.
    expect(await client.keys(`${keyPrefix}adapter:ip4:192.0.2.1:*`)).toHaveLength(1);

    await client.script('FLUSH');
    const after = await ratelimit.limit('ip4:192.0.2.2');
    expect(after).toMatchObject({ success: true, remaining: 2 });
    expect(after.reason).toBeUndefined();
  });

  it('the pre-auth limiter answers from Redis with no fallback and no script error logged', async () => {
    const limiter = createPreAuthLimiter({ shared: redisWindows(connect(sharedUrl)), log });
    const decision = await limiter.check(`ip4:${freshIp()}`, 'jwks');
    expect(decision).toMatchObject({ allowed: true, limit: 100, remaining: 99, source: 'redis' });
    expect(logs.filter((record) => String(record.msg).includes('pre-auth'))).toEqual([]);
  });
});

describe('per-IP limit over Redis (100/min)', () => {
  let app: Harness;
  beforeAll(async () => {
    app = await gatewayWith(
      createPreAuthLimiter({ shared: redisWindows(connect(sharedUrl)), log, prefix: 'http' }),
    );
  });

  it('the 101st request in a minute from one IP is 429 in the error shape; another IP is fine', async () => {
    await awayFromWindowEdge();
    const flooder = freshIp();
    const first = await get(app, flooder);
    expect(first.status).toBe(200);
    expect(first.headers.get('ratelimit-limit')).toBe('100');
    expect(first.headers.get('ratelimit-remaining')).toBe('99');
    expect(Number(first.headers.get('ratelimit-reset'))).toBeGreaterThanOrEqual(0);
    expect(Number(first.headers.get('ratelimit-reset'))).toBeLessThanOrEqual(60);

    const rest = await statuses(Array.from({ length: 99 }, () => get(app, flooder)));
    expect(rest.every((status) => status === 200)).toBe(true);

    const refused = await get(app, flooder);
    expect(refused.status).toBe(429);
    const retryAfter = Number(refused.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(refused.headers.get('ratelimit-remaining')).toBe('0');
    const body = (await refused.json()) as ErrorBody;
    expect(body.error).toMatchObject({
      code: 'rate_limited',
      dimension: 'ip',
      limit: 100,
      remaining: 0,
      requestId: refused.headers.get('x-request-id'),
    });
    expect(body.error.retryAfterMs).toBeGreaterThan(0);
    expect(Math.ceil((body.error.retryAfterMs as number) / 1000)).toBe(retryAfter);

    expect((await get(app, freshIp())).status).toBe(200);
  });

  it('the JWKS and tRPC count separately: a flooded JWKS still leaves the address its tRPC budget', async () => {
    await awayFromWindowEdge();
    const limiter = createPreAuthLimiter({
      shared: redisWindows(connect(sharedUrl)),
      log,
      prefix: 'routes',
      limitPerMinute: 2,
    });
    const gateway = await gatewayWith(limiter);
    const ip = freshIp();
    expect(await statuses([1, 2, 3].map(() => get(gateway, ip)))).toEqual([200, 200, 429]);
    const trpc = () => gateway.requestFrom(ip, '/trpc/admin.system.info');
    // Anonymous, so 401 from tRPC: past the limit it would be 429.
    expect(await statuses([trpc(), trpc()])).toEqual([401, 401]);
    expect((await trpc()).status).toBe(429);
  });

  it('IPv6 addresses of one /64 share a bucket; the next /64 does not', async () => {
    await awayFromWindowEdge();
    const limiter = createPreAuthLimiter({
      shared: redisWindows(connect(sharedUrl)),
      log,
      prefix: 'v6',
      limitPerMinute: 3,
    });
    const v6 = await gatewayWith(limiter);
    const net = randomBytes(2).toString('hex');
    expect(await statuses([1, 2, 3].map((host) => get(v6, `2001:db8:${net}:7::${host}`)))).toEqual([
      200, 200, 200,
    ]);
    expect((await get(v6, `2001:db8:${net}:7:ffff::1`)).status).toBe(429);
    expect((await get(v6, `2001:db8:${net}:8::1`)).status).toBe(200);
  });
});

describe('spoofed X-Forwarded-For gets no fresh bucket', () => {
  it('with TRUST_PROXY_HOPS=0', async () => {
    await awayFromWindowEdge();
    const app = await gatewayWith(
      createPreAuthLimiter({
        shared: redisWindows(connect(sharedUrl)),
        log,
        prefix: 'h0',
        limitPerMinute: 5,
      }),
      { trustProxyHops: 0 },
    );
    const client = freshIp();
    const spoofed = Array.from({ length: 20 }, (_, i) =>
      get(app, client, { 'x-forwarded-for': `203.0.113.${i}` }),
    );
    const results = await statuses(spoofed);
    expect(results.filter((status) => status === 200)).toHaveLength(5);
    expect(results.filter((status) => status === 429)).toHaveLength(15);
  });

  it('with TRUST_PROXY_HOPS=1: only the entry the proxy appended counts', async () => {
    await awayFromWindowEdge();
    const app = await gatewayWith(
      createPreAuthLimiter({
        shared: redisWindows(connect(sharedUrl)),
        log,
        prefix: 'h1',
        limitPerMinute: 5,
      }),
      { trustProxyHops: 1 },
    );
    const proxy = '10.0.0.1';
    const client = freshIp();
    const spoofed = Array.from({ length: 20 }, (_, i) =>
      get(app, proxy, { 'x-forwarded-for': `203.0.113.${i}, 192.0.2.${i}, ${client}` }),
    );
    const results = await statuses(spoofed);
    expect(results.filter((status) => status === 200)).toHaveLength(5);
    expect(results.filter((status) => status === 429)).toHaveLength(15);
    // Another client behind the same proxy has a bucket of its own.
    expect((await get(app, proxy, { 'x-forwarded-for': freshIp() })).status).toBe(200);
  });
});

describe('buckets', () => {
  it('::ffff:1.2.3.4 and 1.2.3.4 share a bucket', async () => {
    await awayFromWindowEdge();
    const app = await gatewayWith(
      createPreAuthLimiter({
        shared: redisWindows(connect(sharedUrl)),
        log,
        prefix: 'mapped',
        limitPerMinute: 4,
      }),
    );
    expect(await statuses([get(app, '::ffff:1.2.3.4'), get(app, '::ffff:1.2.3.4')])).toEqual([200, 200]);
    expect(await statuses([get(app, '1.2.3.4'), get(app, '1.2.3.4')])).toEqual([200, 200]);
    expect((await get(app, '::ffff:1.2.3.4')).status).toBe(429);
    expect((await get(app, '1.2.3.4')).status).toBe(429);
  });

  it('a request without an address is limited, and varying headers only reaches the no-address budget', async () => {
    await awayFromWindowEdge();
    const limiter = createPreAuthLimiter({
      shared: redisWindows(connect(sharedUrl)),
      log,
      prefix: 'noaddr',
      limitPerMinute: 3,
      noAddressLimitPerMinute: 10,
    });
    const app = await gatewayWith(limiter);
    // No socket (as with app.request), no header: limited like any client.
    expect(await statuses([1, 2, 3, 4].map(() => get(app, undefined)))).toEqual([200, 200, 200, 429]);
    // A fresh X-Forwarded-For per request (ignored with 0 hops) gets at most the aggregate budget.
    const varied = await statuses(
      Array.from({ length: 15 }, (_, i) => get(app, undefined, { 'x-forwarded-for': `203.0.113.${i}` })),
    );
    expect(varied.filter((status) => status === 200)).toHaveLength(10 - 3);
    expect(varied.filter((status) => status === 429)).toHaveLength(15 - 7);
  });

  it('a real socket: loopback is its own bucket and the headers are set', async () => {
    const gateway = await gatewayWith(
      createPreAuthLimiter({
        shared: redisWindows(connect(sharedUrl)),
        log,
        prefix: 'sock',
        limitPerMinute: 2,
      }),
    );
    const server = await serve(gateway.app);
    try {
      const codes: number[] = [];
      for (let i = 0; i < 3; i += 1) {
        const response = await fetch(`${server.url}/.well-known/jwks.json`, {
          headers: { 'x-forwarded-for': `203.0.113.${i}` },
        });
        codes.push(response.status);
        expect(response.headers.get('ratelimit-limit')).toBe('2');
        await response.arrayBuffer();
      }
      expect(codes).toEqual([200, 200, 429]);
    } finally {
      await server.close();
    }
  });
});

describe('ephemeral cache', () => {
  it('sheds a flood from one bucket without further Redis calls', async () => {
    await awayFromWindowEdge();
    const client = connect(own.url);
    const limiter = createPreAuthLimiter({
      shared: redisWindows(client),
      log,
      prefix: 'flood',
      limitPerMinute: 5,
    });
    const app = await gatewayWith(limiter);
    const flooder = freshIp();
    expect(await statuses(Array.from({ length: 6 }, () => get(app, flooder)))).toEqual([
      200, 200, 200, 200, 200, 429,
    ]);
    const before = await scriptCalls(client);
    const flood = await statuses(Array.from({ length: 500 }, () => get(app, flooder)));
    expect(flood.every((status) => status === 429)).toBe(true);
    expect(await scriptCalls(client)).toBe(before);
    expect(await limiter.check(`ip4:${flooder}`, 'jwks')).toMatchObject({ allowed: false, source: 'cache' });
    // Another address still goes to Redis.
    expect(await limiter.check(`ip4:${freshIp()}`, 'jwks')).toMatchObject({ allowed: true, source: 'redis' });
    expect(await scriptCalls(client)).toBe(before + 1);
  });
});

describe('embedded defaults (no Redis)', () => {
  it('the in-process limiter alone enforces the limit', async () => {
    await awayFromWindowEdge();
    const limiter = createPreAuthLimiter({ log, limitPerMinute: 100 });
    const app = await gatewayWith(limiter);
    const ip = freshIp();
    const results = await statuses(Array.from({ length: 101 }, () => get(app, ip)));
    expect(results.slice(0, 100).every((status) => status === 200)).toBe(true);
    expect(results[100]).toBe(429);
    expect(await limiter.check(`ip4:${ip}`, 'jwks')).toMatchObject({ allowed: false, source: 'fallback' });
  });
});

describe('Redis unavailable: the fallback limits, never fails open', () => {
  let server: RedisServer;
  let limiter: PreAuthLimiter;
  let app: Harness;
  beforeAll(async () => {
    server = await startRedisServer();
    limiter = createPreAuthLimiter({
      shared: redisWindows(connect(server.url)),
      log,
      prefix: 'down',
      limitPerMinute: 5,
    });
    app = await gatewayWith(limiter);
    expect(await limiter.check(`ip4:${freshIp()}`, 'jwks')).toMatchObject({ source: 'redis' });
  });
  afterAll(async () => {
    server.process.kill('SIGCONT');
    await server.stop();
  });

  it('a stalled Redis (SIGSTOP): the library would time out open; we limit in-process instead', async () => {
    await awayFromWindowEdge();
    server.process.kill('SIGSTOP');
    try {
      const ip = freshIp();
      // The library's timeout answers `success: true, reason: 'timeout'`; the in-process limiter
      // decides instead, so the count goes on and the sixth request is refused.
      const decision = await limiter.check(`ip4:${ip}`, 'jwks');
      expect(decision).toMatchObject({ allowed: true, source: 'fallback', limit: 5, remaining: 4 });
      const results = await statuses(Array.from({ length: 6 }, () => get(app, ip)));
      expect(results).toEqual([200, 200, 200, 200, 429, 429]);
    } finally {
      server.process.kill('SIGCONT');
    }
    expect(
      logs.some((record) => record.msg === 'pre-auth limiter: store unavailable, limiting in-process'),
    ).toBe(true);
  });

  it('a stopped Redis: still 429 after the limit, from the in-process limiter', async () => {
    await awayFromWindowEdge();
    // A limiter of its own, so the previous test's back-off does not decide for it.
    const fresh = createPreAuthLimiter({
      shared: redisWindows(connect(server.url)),
      log,
      prefix: 'down2',
      limitPerMinute: 5,
    });
    expect(await fresh.check(`ip4:${freshIp()}`, 'jwks')).toMatchObject({ source: 'redis' });
    const freshApp = await gatewayWith(fresh);
    await server.stop();
    const ip = freshIp();
    const results = await statuses(Array.from({ length: 8 }, () => get(freshApp, ip)));
    expect(results).toEqual([200, 200, 200, 200, 200, 429, 429, 429]);
    expect(await fresh.check(`ip4:${ip}`, 'jwks')).toMatchObject({ allowed: false, source: 'fallback' });
  });
});
