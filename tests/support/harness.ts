import { randomBytes } from 'node:crypto';
import type { Hono } from 'hono';
import { inject } from 'vitest';
import { createApp } from '../../src/app.js';
import type { Clock } from '../../src/clock.js';
import { type Config, parseConfig } from '../../src/config.js';
import type { AppEnv } from '../../src/http/context.js';
import { type Peppers, parsePeppers } from '../../src/keys/peppers.js';
import { createLogger } from '../../src/observability/logger.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { assembleServices, type Services } from '../../src/services.js';
import { localSigner, type Signer } from '../../src/signing/signer.js';
import { redisStore, type Store } from '../../src/store/index.js';
import { createTestDatabase } from './database.js';
import { deleteKeysWithPrefix } from './redis-cleanup.js';

export type LogRecord = Record<string, unknown> & { msg?: string; level?: string };

export interface Harness {
  app: Hono<AppEnv>;
  services: Services;
  adminToken: string;
  /** Every log line the app wrote, parsed. */
  logs: LogRecord[];
  request(path: string, init?: RequestInit): Promise<Response>;
  /** A request with the bootstrap admin bearer token. */
  adminRequest(path: string, init?: RequestInit): Promise<Response>;
  close(): Promise<void>;
}

export interface HarnessOptions {
  config?: Partial<Config>;
  /** Replaces the default store: the shared Redis with a key prefix of this file's own. */
  store?: Store;
  clock?: Clock;
  /** Replaces the in-memory local signer (e.g. one holding a private key the test knows). */
  signer?: Signer;
}

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

  const database = await createTestDatabase(inject('databaseUrl'));
  const metrics = createMetrics();
  const keyPrefix = `sgtest:${randomBytes(6).toString('hex')}:`;
  const store = options.store ?? redisStore({ url: inject('redisUrl'), keyPrefix, log, metrics });
  const adminToken = randomBytes(32).toString('base64url');

  const services = assembleServices({
    config,
    database: database.handle,
    store,
    signer: options.signer ?? (await localSigner()),
    peppers: parsePeppers(`1:${randomBytes(32).toString('base64url')}`) as Peppers,
    log,
    metrics,
    adminToken,
    ...(options.clock === undefined ? {} : { clock: options.clock }),
  });
  await services.signing.start();
  const app = createApp(services);
  const request = async (path: string, init?: RequestInit) => app.request(path, init);

  return {
    app,
    services,
    adminToken,
    logs,
    request,
    adminRequest: (path, init = {}) => {
      const headers = new Headers(init.headers);
      headers.set('authorization', `Bearer ${adminToken}`);
      return request(path, { ...init, headers });
    },
    close: async () => {
      await store.close();
      await database.drop();
      if (options.store === undefined) await deleteKeysWithPrefix(inject('redisUrl'), keyPrefix);
    },
  };
}
