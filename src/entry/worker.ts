import { AsyncLocalStorage } from 'node:async_hooks';
import type { Hono } from 'hono';
// postgres-client.ts directly, not db/index.ts: the bundle must never pull PGlite or the migrator in.
import { postgresClient } from '../../db/postgres-client.js';
import type { Db } from '../../db/types.js';
import { createApp, createNotReadyApp } from '../app.js';
import { type Config, type Env, parseConfig, warnNotYetInEffect } from '../config.js';
import type { AppEnv } from '../http/context.js';
import { gatewayJobs, type JobsState, jobsState, runDueJobs } from '../jobs/index.js';
import { type Peppers, parsePeppers } from '../keys/peppers.js';
import { createLogger, type Logger } from '../observability/logger.js';
import { createMetrics } from '../observability/metrics.js';
import { assembleServices, type Services } from '../services.js';
import { localSigner, parsePrivateJwks, type Signer } from '../signing/signer.js';
// memory.ts directly, not store/index.ts, which would bundle ioredis.
import { memoryStore } from '../store/memory/index.js';
import { upstashStore } from '../store/upstash.js';

/**
 * The Cloudflare Workers entry (DESIGN.md §5): the only place on Workers that reads bindings and
 * picks adapters. Migrations are not run here; run `spicegate migrate` against the database
 * before deploying (see wrangler.toml).
 *
 * Services (and the app) are built once per isolate, so what they keep outlives a request: the
 * spend rows and key usage waiting to be written, the upstream's circuit breaker, metrics, the
 * limiters, the caches. Their database is not: Workers forbid using a socket opened by one request
 * from another, so `services.db` stands for the client of the request running (AsyncLocalStorage),
 * opened at its first query and closed once everything the request handed to `ctx.waitUntil` has
 * run. Each request then writes what is queued (spend rows, key usage when due) with its own
 * client, in its `ctx.waitUntil`: Workers run no timers between requests.
 */

/** The bindings this entry reads. Vars and secrets are strings; HYPERDRIVE is an object. */
export interface WorkerEnv {
  readonly [binding: string]: unknown;
  readonly HYPERDRIVE?: { readonly connectionString: string };
}

/** The part of Cloudflare's ExecutionContext this entry needs (no @cloudflare/workers-types). */
export interface WorkerContext {
  waitUntil(promise: Promise<unknown>): void;
}

// 5: Workers allow six simultaneous outbound connections per request; one stays free for the
// upstream model call. (Cloudflare's guidance for postgres.js on Workers.)
const MAX_DATABASE_CONNECTIONS = 5;
const KEY_REFRESH_MS = 10_000;
// As often as Node's writer (KeyVerifier): last_used_at is a hint, not worth a write per request.
const KEY_USAGE_FLUSH_MS = 5_000;

/** One request's (or one cron tick's) own parts. */
interface RequestScope {
  readonly ctx: WorkerContext;
  /** Its database client, opened at its first query. */
  database?: { db: Db; close(): Promise<void> };
  /** What it handed to `services.waitUntil`, awaited before its queued writes are flushed. */
  readonly pending: Promise<unknown>[];
}

type IsolateState =
  | {
      ready: true;
      config: Config;
      log: Logger;
      services: Services;
      app: Hono<AppEnv>;
      requests: AsyncLocalStorage<RequestScope>;
      /** When this isolate last wrote some key's last_used_at: the next write waits KEY_USAGE_FLUSH_MS. */
      keyUsageFlushedAtMs: number;
      /** When each background job last ran in this isolate (the scheduled handler). */
      jobs: JobsState;
    }
  | { ready: false; app: Hono<AppEnv> };

type ReadyIsolate = Extract<IsolateState, { ready: true }>;

// A module-level memo is allowed in this entry only (STYLE.md §1): an isolate's bindings never
// change, so its Services are built once.
let isolate: Promise<IsolateState> | undefined;

export default {
  async fetch(request: Request, env: WorkerEnv, ctx: WorkerContext): Promise<Response> {
    isolate ??= initIsolate(env);
    const ready = await isolate;
    if (!ready.ready) return ready.app.fetch(request);
    const scope: RequestScope = { ctx, pending: [] };
    return ready.requests.run(scope, async () => {
      try {
        // With the database down the last copy of the keys keeps serving the JWKS.
        await ready.services
          .start()
          .catch((error: unknown) => ready.log.warn({ err: error }, 'signing keys could not be refreshed'));
        return await ready.app.fetch(request);
      } finally {
        ctx.waitUntil(finish(ready, scope, { keyUsage: 'when_due' }));
      }
    });
  },

  /**
   * The cron trigger (wrangler.toml `[triggers]`): the background jobs a Node instance runs
   * (src/jobs: reaper, outbox drain, unsettled spend, conservation, payments…), those due at this
   * tick, under the same leases and fencing; the isolate's job state remembers when each last ran.
   * Then what this isolate holds is written: spend rows and every key's last use.
   */
  async scheduled(_event: { scheduledTime?: number }, env: WorkerEnv, ctx: WorkerContext): Promise<void> {
    isolate ??= initIsolate(env);
    const ready = await isolate;
    if (!ready.ready) return;
    const scope: RequestScope = { ctx, pending: [] };
    const run = ready.requests.run(scope, async () => {
      try {
        await ready.services.start();
        const { services } = ready;
        // workerd binds an AbortController to the event that made it: each tick gets its own.
        ready.jobs = { ...ready.jobs, stopping: new AbortController() };
        await runDueJobs(services, gatewayJobs(ready.config), services.clock.now(), ready.jobs);
      } catch (error) {
        ready.log.error({ err: error }, 'scheduled jobs could not run');
      } finally {
        await finish(ready, scope, { keyUsage: 'now' });
      }
    });
    ctx.waitUntil(run);
    await run;
  },
};

/**
 * The end of a request, in its `ctx.waitUntil`: once what it handed over has run (its stream's
 * settlement among them), the spend rows queued in this isolate and, when due, the keys' last use
 * are written with its client, which is then closed. A failed write stays queued for the next
 * request; the outbox drain writes the spend rows regardless.
 */
async function finish(
  ready: ReadyIsolate,
  scope: RequestScope,
  options: { keyUsage: 'when_due' | 'now' },
): Promise<void> {
  const { services, log } = ready;
  // services.waitUntil hands over promises that never reject.
  for (let batch = scope.pending.splice(0); batch.length > 0; batch = scope.pending.splice(0)) {
    await Promise.all(batch);
  }
  await services.spend.flush().catch((error: unknown) => log.warn({ err: error }, 'spend flush failed'));
  const nowMs = services.clock.now();
  if (options.keyUsage === 'now' || nowMs - ready.keyUsageFlushedAtMs >= KEY_USAGE_FLUSH_MS) {
    const written = await services.keys.flushUsage().catch((error: unknown) => {
      log.warn({ err: error }, 'last_used_at flush failed');
      return 0;
    });
    if (written > 0) ready.keyUsageFlushedAtMs = nowMs;
  }
  await scope.database
    ?.close()
    .catch((error: unknown) => log.warn({ err: error }, 'database client did not close cleanly'));
}

/**
 * A Db that stands for the current request's client: each property read picks the client of the
 * request running (opening it at the first use), so long-lived Services never hold a socket.
 */
function requestDatabase(requests: AsyncLocalStorage<RequestScope>, databaseUrl: string): Db {
  const current = (): Db => {
    const scope = requests.getStore();
    // Only the handlers below run Services' code; anything else would cross requests.
    if (scope === undefined) throw new Error('The database was used outside a request');
    scope.database ??= postgresClient(databaseUrl, { maxConnections: MAX_DATABASE_CONNECTIONS });
    return scope.database.db;
  };
  return new Proxy({} as Db, {
    get(_target, property) {
      const db = current();
      const value: unknown = Reflect.get(db, property, db);
      return typeof value === 'function' ? value.bind(db) : value;
    },
    getPrototypeOf: () => Object.getPrototypeOf(current()),
  });
}

async function initIsolate(env: WorkerEnv): Promise<IsolateState> {
  const result = parseConfig(stringBindings(env));
  if (!result.ok) return misconfigured(result.variable, result.message);
  const { config } = result;

  const databaseUrl = env.HYPERDRIVE?.connectionString ?? config.databaseUrl;
  if (databaseUrl === undefined) {
    return misconfigured(
      'DATABASE_URL',
      'DATABASE_URL is required on Workers (the embedded database does not run here)',
    );
  }
  if (config.apiKeyPeppers === undefined) {
    return misconfigured(
      'API_KEY_PEPPERS',
      'API_KEY_PEPPERS is required on Workers (there is no DATA_DIR to keep one in)',
    );
  }
  // Workers have no DATA_DIR: without configured keys every isolate would sign with a key of its
  // own, lost with it — tokens it issued stop verifying and finn rejects the next isolate's.
  const privateJwks = parsePrivateJwks(config.signingPrivateJwks);
  if (privateJwks.length === 0) {
    return misconfigured(
      'SIGNING_PRIVATE_JWKS',
      'SIGNING_PRIVATE_JWKS is required on Workers (there is no DATA_DIR to keep a signing key in)',
    );
  }
  let signer: Signer;
  try {
    signer = await localSigner({ configured: privateJwks });
  } catch (error) {
    return misconfigured('SIGNING_PRIVATE_JWKS', `SIGNING_PRIVATE_JWKS: ${(error as Error).message}`);
  }

  const log = createLogger({ level: config.logLevel });
  const metrics = createMetrics();
  // Upstash REST when configured. Without it, the memory engine keeps limits and reservations in
  // this isolate only: fine for a trial, wrong for production (isolates do not share it).
  const store =
    config.upstash === undefined
      ? memoryStore({ log, metrics })
      : upstashStore({ ...config.upstash, log, metrics });
  if (config.upstash === undefined) log.warn('no UPSTASH_REDIS_REST_URL: limits and budgets are per isolate');
  warnNotYetInEffect(config, log);

  const requests = new AsyncLocalStorage<RequestScope>();
  const services = assembleServices({
    config,
    // Closed by each request (finish), never by the Services.
    database: { db: requestDatabase(requests, databaseUrl), engine: 'postgres', close: async () => {} },
    store,
    signer,
    peppers: parsePeppers(config.apiKeyPeppers) as Peppers,
    // Cloudflare's edge sets it; a client cannot forge it past the edge.
    clientAddress: (req) => req.headers.get('cf-connecting-ip') ?? undefined,
    log,
    metrics,
    adminToken: config.adminToken,
    lifecycle: {
      // No timers: the keys are re-read at most every 10 s per isolate, their change counter every second.
      signingKeysMaxAgeMs: KEY_REFRESH_MS,
      waitUntil: (promise) => {
        const scope = requests.getStore();
        if (scope === undefined) return;
        scope.pending.push(promise);
        scope.ctx.waitUntil(promise);
      },
    },
  });
  log.info({ database: 'postgres', store: store.engine }, 'spicegate worker isolate ready');
  return {
    ready: true,
    config,
    log,
    services,
    app: createApp(services),
    requests,
    keyUsageFlushedAtMs: Number.NEGATIVE_INFINITY,
    jobs: jobsState(`worker:${crypto.randomUUID()}`),
  };
}

/** A bad configuration answers every request with 503 naming the variable, never its value. */
function misconfigured(variable: string, message: string): IsolateState {
  const log = createLogger({ level: 'info' });
  log.error({ variable, message }, 'invalid configuration');
  // The default body limit: MAX_BODY_BYTES itself may be the bad value.
  return {
    ready: false,
    app: createNotReadyApp({
      log,
      maxBodyBytes: 1_048_576,
      message: `Invalid configuration: ${message}`,
      details: { variable },
      liveness: false,
    }),
  };
}

/** Configuration comes from string bindings only; objects (Hyperdrive, KV, …) are not settings. */
function stringBindings(env: WorkerEnv): Env {
  const strings: Env = {};
  for (const [name, value] of Object.entries(env)) {
    if (typeof value === 'string') strings[name] = value;
  }
  return strings;
}
