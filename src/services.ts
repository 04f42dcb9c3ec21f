import type { JWTVerifyGetKey } from 'jose';
import type { Db, DbEngine } from '../db/index.js';
import { remoteIssuerKeys } from './auth/caller.js';
import { CancelAfterTimeout } from './budget/cancel-after-timeout.js';
import { BudgetThresholds } from './budget/thresholds.js';
import { type Clock, systemClock } from './clock.js';
import type { Config } from './config.js';
import { FeatureFlags } from './flags/feature-flags.js';
import type { Peppers } from './keys/peppers.js';
import { CHANGES_POLL_MS, KeyVerifier } from './keys/verifier.js';
import { SpendRecorder } from './ledger/spend.js';
import { type AuthFailureLimiter, createAuthFailureLimiter } from './limits/auth-failures.js';
import { createPaymentThrottle, createPreAuthLimiter, type PreAuthLimiter } from './limits/preauth.js';
import type { Logger } from './observability/logger.js';
import { createMetrics, type Metrics } from './observability/metrics.js';
import { PriceBook } from './pricing/price-book.js';
import { SETTINGS_POLL_MS } from './settings/watched-copy.js';
import { SigningKeys } from './signing/keys.js';
import type { Signer } from './signing/signer.js';
import type { Store } from './store/index.js';
import { TenantActivity } from './tenants/activity.js';
import { createUpstream, type UpstreamOverrides } from './upstream/index.js';
import type { Upstream } from './upstream/port.js';

/**
 * Everything a handler may depend on, built once by an entry (src/entry/*) and passed to
 * `createApp(services)`. Nothing below the entry reads the environment or holds a client in a
 * module variable, so a test builds an isolated app from its own Services.
 */
export interface Services {
  config: Config;
  db: Db;
  store: Store;
  log: Logger;
  metrics: Metrics;
  clock: Clock;
  /** The gateway's signing keys (JWKS, S2S and caller tokens). */
  signing: SigningKeys;
  /** API key verification with its caches (and the pepper that hashes new keys). */
  keys: KeyVerifier;
  /** Pool prices per tenant (admin.pricing), in memory, refreshed by a change counter. */
  prices: PriceBook;
  /** Feature flags (admin.flags), in memory, refreshed by a change counter. */
  flags: FeatureFlags;
  /** Per-IP limits for unauthenticated routes (DESIGN.md §3). */
  preAuth: PreAuthLimiter;
  /** Failed authentications per IP (bad API keys, bad tRPC bearers); past the budget, 429. */
  authFailures: AuthFailureLimiter;
  /** IPNs per payment per hour (POST /api/crypto/webhook), counted before any HMAC work. */
  paymentThrottle: PreAuthLimiter;
  /** The model service requests are relayed to (UPSTREAM). */
  upstream: Upstream;
  /** Spend rows in PostgreSQL, and the settlement of those the store could not finalize. */
  spend: SpendRecorder;
  /** 80 % / 100 % budget threshold events: subscribe here (emitted once across instances). */
  budgetThresholds: BudgetThresholds;
  /** Cancels, in the background, the reservations whose admit timed out (the late admit may still run). */
  cancelsAfterTimeout: CancelAfterTimeout;
  /** Marks tenants in the store's tenant index before they reserve (what the reaper visits). */
  tenantActivity: TenantActivity;
  /** The caller's transport address; default the Node socket peer (Workers: CF-Connecting-IP). */
  clientAddress?: (request: Request) => string | undefined;
  engines: { db: DbEngine; store: Store['engine'] };
  /** The bootstrap admin secret (ADMIN_TOKEN or the generated one), if any. Never logged. */
  adminToken?: string;
  /** The external issuer's JWKS (AUTH_JWKS_URL): one set, so its cache and cooldown outlive a request. */
  externalIssuerKeys?: JWTVerifyGetKey;
  /**
   * Keeps the runtime running until `promise` settles: the work that settles money after (or apart
   * from) the response — the pipeline from admission to settlement, spend and pool decision rows.
   * Node: nothing to do (the process runs on); Workers: the request's `ctx.waitUntil`. Only waits:
   * the caller handles the promise's failure.
   */
  waitUntil(promise: Promise<unknown>): void;
  /** Loads the signing keys, then starts the background work the entry asked for (`Lifecycle`). */
  start(): Promise<void>;
  /**
   * Ends the background work and writes what is queued (key usage, spend rows), then closes what
   * the entry handed over: its own connections, the store, the database last. Once only.
   */
  stop(): Promise<void>;
}

/** What differs per runtime in `services.start()` and `services.stop()`; the order does not. */
export interface Lifecycle {
  /**
   * What start() runs in the background. `all` (a long-lived process): the upstream's contract
   * check, the change-counter polls (keys, prices, flags), the key usage writer, the spend writer (the jobs, settlement
   * retries among them, are the entry's: src/jobs). `checks`: the upstream's contract check only
   * (tests call the writers' steps themselves). Default none: Workers run no timer between requests
   * (each request writes what is queued, src/entry/worker.ts).
   */
  background?: 'all' | 'checks';
  /**
   * Services started once per request (Workers, no timers): start() reloads the signing keys only
   * when its copy is older than this, and reads the keys' change counter at most once a second (what
   * the timer does on Node). Default: always loaded.
   */
  signingKeysMaxAgeMs?: number;
  /** Where `services.waitUntil` hands its promises (Workers: the current request's ctx.waitUntil). */
  waitUntil?: (promise: Promise<unknown>) => void;
  /** What stop() closes, in this order, after the queued writes; default nothing. */
  owns?: {
    /** The entry's own clients (a second Redis connection, the upstream's HTTP agents). */
    connections?: ReadonlyArray<() => unknown>;
    store?: boolean;
    /** Closed last, and even when the store could not be. */
    database?: boolean;
  };
}

/**
 * The one way an entry puts Services together from the adapters it picked. The entry then calls
 * `services.start()` (loads the signing keys, creating the first one on a first start) and, when
 * it is done, `services.stop()`.
 */
export function assembleServices(parts: {
  config: Config;
  database: { db: Db; engine: DbEngine; close(): Promise<void> };
  store: Store;
  signer: Signer;
  peppers: Peppers;
  preAuth?: PreAuthLimiter;
  authFailures?: AuthFailureLimiter;
  paymentThrottle?: PreAuthLimiter;
  upstream?: Upstream;
  /** How the upstream UPSTREAM names is reached (the Node entry passes node:http). */
  upstreamOverrides?: UpstreamOverrides;
  clientAddress?: (request: Request) => string | undefined;
  log: Logger;
  metrics?: Metrics;
  clock?: Clock;
  adminToken?: string | undefined;
  lifecycle?: Lifecycle;
}): Services {
  const clock = parts.clock ?? systemClock;
  const signing = new SigningKeys(parts.database.db, parts.signer, clock, parts.config, parts.log);
  const keys = new KeyVerifier(parts.database.db, parts.store, parts.peppers, clock, parts.log);
  const metrics = parts.metrics ?? createMetrics();
  const watched = { store: parts.store, clock, log: parts.log };
  const prices = new PriceBook(parts.database.db, watched, parts.config.prices);
  const flags = new FeatureFlags(parts.database.db, watched, parts.config);
  const spend = new SpendRecorder(parts.database.db, parts.store, clock, parts.log, metrics.spendParked);
  const budgetThresholds = new BudgetThresholds(parts.store, parts.log);
  // Past the reservation TTL the reaper releases what a late admit reserved.
  const cancelsAfterTimeout = new CancelAfterTimeout(parts.store, parts.log, {
    giveUpAfterMs: parts.config.reservationTtlMs,
  });
  const upstream =
    parts.upstream ??
    createUpstream(parts.config, { signing, clock, log: parts.log }, parts.upstreamOverrides);
  const externalIssuerKeys =
    parts.config.externalAuth === undefined ? undefined : remoteIssuerKeys(parts.config.externalAuth);
  const lifecycle = parts.lifecycle ?? {};
  let keysPolledAtMs = Number.NEGATIVE_INFINITY;

  const start = async () => {
    if (lifecycle.signingKeysMaxAgeMs === undefined) {
      await signing.start();
      await Promise.all([prices.refresh(), flags.refresh()]);
    } else {
      await signing.ensureFresh(lifecycle.signingKeysMaxAgeMs);
      // At most one counter read per second each (per isolate on Workers): a revoked key stops
      // working here within the same bound as on Node.
      const nowMs = clock.now();
      const pollKeys = nowMs - keysPolledAtMs >= CHANGES_POLL_MS;
      if (pollKeys) keysPolledAtMs = nowMs;
      await Promise.all([
        prices.ensureFresh(SETTINGS_POLL_MS),
        flags.ensureFresh(SETTINGS_POLL_MS),
        pollKeys ? keys.pollChanges() : undefined,
      ]);
    }
    if (lifecycle.background === undefined) return;
    upstream.start?.();
    if (lifecycle.background !== 'all') return;
    keys.start();
    prices.start();
    flags.start();
    spend.start();
  };
  let stopping: Promise<void> | undefined;
  const stop = async () => {
    upstream.stop?.();
    cancelsAfterTimeout.stop();
    prices.stop();
    flags.stop();
    await budgetThresholds.idle();
    await keys.stop();
    // Spend rows are written before the database closes; a failed write is logged, not retried.
    await spend
      .stop()
      .catch((error: unknown) => parts.log.error({ err: error }, 'spend rows could not be flushed'));
    const owns = lifecycle.owns ?? {};
    // Each connection may fail to close; the store and the database are closed all the same.
    for (const close of owns.connections ?? []) {
      await Promise.resolve()
        .then(close)
        .catch((error: unknown) => parts.log.warn({ err: error }, 'a connection did not close cleanly'));
    }
    // The database is closed even when the store cannot be (Redis down at shutdown).
    if (owns.store === true)
      await parts.store
        .close()
        .catch((error: unknown) => parts.log.warn({ err: error }, 'store did not close cleanly'));
    if (owns.database === true) await parts.database.close();
  };

  return {
    config: parts.config,
    db: parts.database.db,
    store: parts.store,
    log: parts.log,
    metrics,
    clock,
    signing,
    keys,
    prices,
    flags,
    preAuth: parts.preAuth ?? createPreAuthLimiter({ log: parts.log }),
    authFailures: parts.authFailures ?? createAuthFailureLimiter({ log: parts.log }),
    paymentThrottle: parts.paymentThrottle ?? createPaymentThrottle({ log: parts.log }),
    spend,
    budgetThresholds,
    cancelsAfterTimeout,
    tenantActivity: new TenantActivity(parts.store),
    upstream,
    ...(parts.clientAddress === undefined ? {} : { clientAddress: parts.clientAddress }),
    engines: { db: parts.database.engine, store: parts.store.engine },
    ...(parts.adminToken === undefined ? {} : { adminToken: parts.adminToken }),
    ...(externalIssuerKeys === undefined ? {} : { externalIssuerKeys }),
    waitUntil: (promise) => {
      // Only waits: a failure is the caller's to handle (and log) on its own promise.
      if (lifecycle.waitUntil !== undefined) lifecycle.waitUntil(promise.catch(() => undefined));
    },
    start,
    stop: () => {
      stopping ??= stop();
      return stopping;
    },
  };
}
