import { randomBytes } from 'node:crypto';
import type { Hono } from 'hono';
import { Redis } from 'ioredis';
import { inject } from 'vitest';
import type { Db } from '../../db/index.js';
import { openPostgres } from '../../db/postgres.js';
import { createApp } from '../../src/app.js';
import type { Clock } from '../../src/clock.js';
import { type Config, parseConfig } from '../../src/config.js';
import type { AppEnv } from '../../src/http/context.js';
import { type Peppers, parsePeppers } from '../../src/keys/peppers.js';
import { createAuthFailureLimiter } from '../../src/limits/auth-failures.js';
import { redisWindows } from '../../src/limits/ioredis-ratelimit-adapter.js';
import {
  createPaymentThrottle,
  createPreAuthLimiter,
  type PreAuthLimiter,
} from '../../src/limits/preauth.js';
import { createLogger, silentLogger } from '../../src/observability/logger.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { assembleServices, type Services } from '../../src/services.js';
import { localSigner, type Signer } from '../../src/signing/signer.js';
import { redisStore, type Store } from '../../src/store/index.js';
import { redisOptions } from '../../src/store/redis.js';
import { nodeHttpClient } from '../../src/upstream/http-node.js';
import type { UpstreamOverrides } from '../../src/upstream/index.js';
import type { Upstream } from '../../src/upstream/port.js';
import { createTestDatabase, loginUrl, type TestDatabase } from './database.js';
import { tempKeyDir } from './key-file.js';
import { deleteKeysWithPrefix } from './redis-cleanup.js';
import { type RedisServer, startRedisServer } from './redis-server.js';

export type LogRecord = Record<string, unknown> & { msg?: string; level?: string };

export interface Harness {
  app: Hono<AppEnv>;
  services: Services;
  adminToken: string;
  /** Every log line the app wrote, parsed. */
  logs: LogRecord[];
  request(path: string, init?: RequestInit): Promise<Response>;
  /** A request as @hono/node-server hands it over from a TCP peer at `address`. */
  requestFrom(address: string, path: string, init?: RequestInit): Promise<Response>;
  /** A request with the bootstrap admin bearer token. */
  adminRequest(path: string, init?: RequestInit): Promise<Response>;
  close(): Promise<void>;
  /**
   * The owner's connection, for the test's own setup and reads. The app's own (`services.db`) is
   * a login that may only become the roles of db/scope.ts, on PostgreSQL (`appLogin`).
   */
  db: Db;
  /** What a second instance needs to share this one's state. */
  shared: { database: TestDatabase; keyPrefix: string; peppers: string };
}

export interface HarnessOptions {
  config?: Partial<Config>;
  /** Replaces the default store: the shared Redis with a key prefix of this file's own. */
  store?: Store;
  clock?: Clock;
  /** Replaces the in-memory local signer (e.g. one holding a private key the test knows). */
  signer?: Signer;
  /** API_KEY_PEPPERS for this instance (default: one random pepper, or the shared instance's). */
  peppers?: string;
  /**
   * A second gateway instance over the same database and the same Redis prefix as this one (as two
   * processes behind a load balancer): its own caches, its own store connection.
   */
  shareWith?: Harness;
  /** Replaces the upstream UPSTREAM names (started and stopped with the gateway). */
  upstream?: Upstream;
  /** How the upstream is reached (default node:http, as in production, when UPSTREAM is not local). */
  upstreamOverrides?: UpstreamOverrides;
  /** Replaces the per-IP pre-auth limiter (whatever `limits` says). */
  preAuth?: PreAuthLimiter;
  /**
   * `'production'`: the per-IP pre-auth limits and the failed-authentication budget with their
   * production values, over the shared Redis under this file's prefix. Default: in-process and
   * lifted, because every `harness.request` (no address) is one client, and files that do not test
   * these limits must not trip them.
   */
  limits?: 'production';
}

/**
 * On PostgreSQL the app connects as this login — not a superuser, owning nothing, only a member of
 * the two roles of db/scope.ts, as docs/deploy.md says to run it — so any query the app makes
 * outside those roles fails the test that reaches it. Tests read and set up through `harness.db`.
 */
export const APP_LOGIN = 'spicegate_test_app';

/**
 * One isolated gateway per test file, on real parts: its own PostgreSQL database (or PGlite),
 * its own Redis key prefix, an in-memory log. `harness.request` goes through the whole Hono app.
 */
export async function createHarness(options: HarnessOptions = {}): Promise<Harness> {
  const parsed = parseConfig({});
  if (!parsed.ok) throw new Error(parsed.message);
  const config: Config = { ...parsed.config, ...options.config };

  const logs: LogRecord[] = [];
  const log = createLogger({
    level: 'debug',
    destination: { write: (line: string) => void logs.push(JSON.parse(line) as LogRecord) },
  });

  const shared = options.shareWith?.shared;
  const database = shared?.database ?? (await createTestDatabase(inject('databaseUrl')));
  const metrics = createMetrics();
  const keyPrefix = shared?.keyPrefix ?? `sgtest:${randomBytes(6).toString('hex')}:`;
  const pepperText = options.peppers ?? shared?.peppers ?? `1:${randomBytes(32).toString('base64url')}`;
  const store = options.store ?? redisStore({ url: inject('redisUrl'), keyPrefix, log, metrics });
  const adminToken = randomBytes(32).toString('base64url');
  const limitsRedis =
    options.limits === 'production' ? new Redis(inject('redisUrl'), redisOptions(keyPrefix)) : undefined;
  limitsRedis?.on('error', () => {});
  // Lifted: far above what any test file sends in a minute.
  const lifted = 1_000_000;

  const http = nodeHttpClient();
  // The default signer's private keys, in a directory of this instance's own, removed at close.
  const keyDir = tempKeyDir();

  const appDatabase =
    database.url === undefined
      ? undefined
      : await openPostgres(await loginUrl(database.url, APP_LOGIN), { maxConnections: 4 });
  const services = assembleServices({
    config,
    database: appDatabase ?? database.handle,
    store,
    signer: options.signer ?? (await localSigner({ file: keyDir.file })),
    peppers: parsePeppers(pepperText) as Peppers,
    log,
    metrics,
    adminToken,
    preAuth:
      options.preAuth ??
      (limitsRedis === undefined
        ? createPreAuthLimiter({ log, limitPerMinute: lifted })
        : createPreAuthLimiter({ log, shared: redisWindows(limitsRedis) })),
    authFailures:
      limitsRedis === undefined
        ? createAuthFailureLimiter({ log, limitPerMinute: lifted })
        : createAuthFailureLimiter({ log, shared: redisWindows(limitsRedis) }),
    paymentThrottle:
      limitsRedis === undefined
        ? createPaymentThrottle({ log, limitPerHour: lifted })
        : createPaymentThrottle({ log, shared: redisWindows(limitsRedis) }),
    ...(options.upstream === undefined ? {} : { upstream: options.upstream }),
    upstreamOverrides: { http, ...options.upstreamOverrides },
    ...(options.clock === undefined ? {} : { clock: options.clock }),
    // The database belongs to the harness (dropped below, or the first instance's).
    lifecycle: {
      background: 'checks',
      owns: { connections: [() => http.close?.(), () => limitsRedis?.disconnect()], store: true },
    },
  });
  await services.start();
  const app = createApp(services);
  const request = async (path: string, init?: RequestInit) => app.request(path, init);

  return {
    app,
    services,
    adminToken,
    logs,
    request,
    requestFrom: async (address, path, init) =>
      app.request(path, init, { incoming: { socket: { remoteAddress: address } } }),
    adminRequest: (path, init = {}) => {
      const headers = new Headers(init.headers);
      headers.set('authorization', `Bearer ${adminToken}`);
      return request(path, { ...init, headers });
    },
    db: database.handle.db,
    shared: { database, keyPrefix, peppers: pepperText },
    close: async () => {
      await services.stop();
      await appDatabase?.close();
      keyDir.remove();
      // The first instance owns the database and the prefix.
      if (shared !== undefined) return;
      await database.drop();
      if (options.store === undefined) await deleteKeysWithPrefix(inject('redisUrl'), keyPrefix);
    },
  };
}

/**
 * A harness whose store is a Redis of its own (started here on a free port), for tests that
 * freeze, stop or restart Redis without touching any other file's store. `close` stops both.
 */
export async function createHarnessOnOwnRedis(
  options: Omit<HarnessOptions, 'store'> = {},
): Promise<Harness & { redis: RedisServer }> {
  const redis = await startRedisServer();
  const harness = await createHarness({
    ...options,
    store: redisStore({ url: redis.url, log: silentLogger() }),
  });
  return {
    ...harness,
    redis,
    close: async () => {
      await harness.close();
      await redis.stop();
    },
  };
}
