import type { Hono } from 'hono';
import type { JWTVerifyGetKey } from 'jose';
// postgres.ts directly, not db/index.ts: the bundle must never pull PGlite in.
import { openPostgres } from '../../db/postgres.js';
import { createApp, createNotReadyApp } from '../app.js';
import { remoteIssuerKeys } from '../auth/caller.js';
import { type Config, type Env, parseConfig, warnNotYetInEffect } from '../config.js';
import type { AppEnv } from '../http/context.js';
import { gatewayJobs, type JobsState, jobsState, runDueJobs } from '../jobs/index.js';
import { type Peppers, parsePeppers } from '../keys/peppers.js';
import { type AuthFailureLimiter, createAuthFailureLimiter } from '../limits/auth-failures.js';
import { createPaymentThrottle, createPreAuthLimiter, type PreAuthLimiter } from '../limits/preauth.js';
import { createLogger, type Logger } from '../observability/logger.js';
import { createMetrics, type Metrics } from '../observability/metrics.js';
import { assembleServices, type Services } from '../services.js';
import { emptyCopy } from '../settings/watched-copy.js';
import type { KeyCache } from '../signing/keys.js';
import { localSigner, parsePrivateJwks, type Signer } from '../signing/signer.js';
// memory.ts directly, not store/index.ts, which would bundle ioredis.
import { memoryStore } from '../store/memory/index.js';
import type { Store } from '../store/typed-store.js';
import { upstashStore } from '../store/upstash.js';
import { TenantActivity } from '../tenants/activity.js';

/**
 * The Cloudflare Workers entry (DESIGN.md §5): the only place on Workers that reads bindings and
 * picks adapters. Migrations are not run here; run `spicegate migrate` against the database
 * before deploying (see wrangler.toml).
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

type IsolateState =
  | {
      ready: true;
      config: Config;
      log: Logger;
      metrics: Metrics;
      store: Store;
      databaseUrl: string;
      signer: Promise<Signer>;
      keyCache: KeyCache;
      peppers: Peppers;
      preAuth: PreAuthLimiter;
      authFailures: AuthFailureLimiter;
      paymentThrottle: PreAuthLimiter;
      /** Per isolate: a tenant is marked in the tenant index once a minute, not once a request. */
      tenantActivity: TenantActivity;
      /** Per isolate: prices and flags are re-read when their change counters move, not per request. */
      settingsCopies: NonNullable<Parameters<typeof assembleServices>[0]['settingsCopies']>;
      /** When each background job last ran in this isolate (the scheduled handler). */
      jobs: JobsState;
      externalIssuerKeys?: JWTVerifyGetKey;
    }
  | { ready: false; app: Hono<AppEnv> };

// A module-level memo is allowed in this entry only (STYLE.md §1): an isolate's bindings never
// change, so config, logger and store are built once per isolate. The database client is not:
// Workers forbid using a socket opened by one request from another, so it is opened per request
// (postgres.js connects lazily, so that is cheap; Hyperdrive pools behind it).
let isolate: IsolateState | undefined;

type ReadyIsolate = Extract<IsolateState, { ready: true }>;

/**
 * Services for one request or one scheduled run, over the isolate's long-lived parts. The database
 * client is the request's own: Workers forbid using a socket opened by one request from another.
 */
async function servicesFor(isolate: ReadyIsolate): Promise<Services> {
  const { config, log, metrics, store, databaseUrl, keyCache } = isolate;
  // No close(): the runtime drops the request's sockets once the response (a stream included)
  // has ended. Closing in waitUntil would cut off writes made when a stream finishes.
  const database = await openPostgres(databaseUrl, { maxConnections: MAX_DATABASE_CONNECTIONS });
  const signer = await isolate.signer;
  return assembleServices({
    peppers: isolate.peppers,
    // Per isolate, not per request: its counters must outlive a request. In-process only for
    // now; the Upstash-backed limiter (shared by isolates) is still to come.
    preAuth: isolate.preAuth,
    authFailures: isolate.authFailures,
    paymentThrottle: isolate.paymentThrottle,
    tenantActivity: isolate.tenantActivity,
    settingsCopies: isolate.settingsCopies,
    // Cloudflare's edge sets it; a client cannot forge it past the edge.
    clientAddress: (req) => req.headers.get('cf-connecting-ip') ?? undefined,
    config,
    database,
    store,
    signer,
    log,
    metrics,
    keyCache,
    ...(isolate.externalIssuerKeys === undefined ? {} : { externalIssuerKeys: isolate.externalIssuerKeys }),
    adminToken: config.adminToken,
    // These Services live for one request: no timers. The keys are re-read at most every 10 s
    // per isolate.
    lifecycle: { signingKeysMaxAgeMs: KEY_REFRESH_MS },
  });
}

export default {
  async fetch(request: Request, env: WorkerEnv, _ctx: WorkerContext): Promise<Response> {
    isolate ??= initIsolate(env);
    if (!isolate.ready) return isolate.app.fetch(request);
    const { config, log } = isolate;
    let services: Services;
    try {
      services = await servicesFor(isolate);
    } catch (error) {
      log.error({ err: error }, 'database client could not be created');
      return createNotReadyApp({
        log,
        maxBodyBytes: config.maxBodyBytes,
        message: 'The database is unavailable',
        liveness: false,
      }).fetch(request);
    }
    // With the database down the last copy of the keys keeps serving the JWKS.
    await services
      .start()
      .catch((error: unknown) => log.warn({ err: error }, 'signing keys could not be refreshed'));
    return createApp(services).fetch(request);
  },

  /**
   * The cron trigger (wrangler.toml `[triggers]`): the background jobs a Node instance runs
   * (src/jobs: reaper, outbox drain, unsettled spend, conservation, payments…), those due at this
   * tick, under the same leases and fencing; the isolate's job state remembers when each last ran.
   */
  async scheduled(_event: { scheduledTime?: number }, env: WorkerEnv, ctx: WorkerContext): Promise<void> {
    isolate ??= initIsolate(env);
    if (!isolate.ready) return;
    const ready = isolate;
    const run = (async () => {
      const services = await servicesFor(ready);
      await services.start();
      await runDueJobs(services, gatewayJobs(ready.config), services.clock.now(), ready.jobs);
    })().catch((error: unknown) => ready.log.error({ err: error }, 'scheduled jobs could not run'));
    ctx.waitUntil(run);
    await run;
  },
};

function initIsolate(env: WorkerEnv): IsolateState {
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
  log.info({ database: 'postgres', store: store.engine }, 'spicegate worker isolate ready');
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
  const signer = localSigner({ configured: privateJwks });
  const peppers = parsePeppers(config.apiKeyPeppers) as Peppers;
  return {
    ready: true,
    peppers,
    preAuth: createPreAuthLimiter({ log }),
    authFailures: createAuthFailureLimiter({ log }),
    paymentThrottle: createPaymentThrottle({ log }),
    tenantActivity: new TenantActivity(store),
    settingsCopies: { prices: emptyCopy(), flags: emptyCopy() },
    jobs: jobsState(`worker:${crypto.randomUUID()}`),
    ...(config.externalAuth === undefined
      ? {}
      : { externalIssuerKeys: remoteIssuerKeys(config.externalAuth) }),
    config,
    log,
    metrics,
    store,
    databaseUrl,
    signer,
    keyCache: { rows: [], loadedAt: 0 },
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
