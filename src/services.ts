import type { Db, DbEngine } from '../db/index.js';
import { BudgetThresholds } from './budget/thresholds.js';
import { type Clock, systemClock } from './clock.js';
import type { Config } from './config.js';
import type { Peppers } from './keys/peppers.js';
import { KeyVerifier } from './keys/verifier.js';
import { SpendRecorder } from './ledger/spend.js';
import { type AuthFailureLimiter, createAuthFailureLimiter } from './limits/auth-failures.js';
import { createPreAuthLimiter, type PreAuthLimiter } from './limits/preauth.js';
import type { Logger } from './observability/logger.js';
import { createMetrics, type Metrics } from './observability/metrics.js';
import { type KeyCache, SigningKeys } from './signing/keys.js';
import type { Signer } from './signing/signer.js';
import type { Store } from './store/index.js';
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
  /** Per-IP limits for unauthenticated routes (DESIGN.md §3). */
  preAuth: PreAuthLimiter;
  /** Failed authentications per IP (bad API keys, bad tRPC bearers); past the budget, 429. */
  authFailures: AuthFailureLimiter;
  /** The model service requests are relayed to (UPSTREAM). */
  upstream: Upstream;
  /** Spend rows in PostgreSQL, and the settlement of those the store could not finalize. */
  spend: SpendRecorder;
  /** 80 % / 100 % budget threshold events: subscribe here (emitted once across instances). */
  budgetThresholds: BudgetThresholds;
  /** The caller's transport address; default the Node socket peer (Workers: CF-Connecting-IP). */
  clientAddress?: (request: Request) => string | undefined;
  engines: { db: DbEngine; store: Store['engine'] };
  /** The bootstrap admin secret (ADMIN_TOKEN or the generated one), if any. Never logged. */
  adminToken?: string;
}

/**
 * The one way an entry puts Services together from the adapters it picked. The entry then calls
 * `services.signing.start()` (loads the keys, creating the first one on a first start).
 */
export function assembleServices(parts: {
  config: Config;
  database: { db: Db; engine: DbEngine };
  store: Store;
  signer: Signer;
  peppers: Peppers;
  preAuth?: PreAuthLimiter;
  authFailures?: AuthFailureLimiter;
  upstream?: Upstream;
  /** How the upstream UPSTREAM names is reached (the Node entry passes node:http). */
  upstreamOverrides?: UpstreamOverrides;
  clientAddress?: (request: Request) => string | undefined;
  log: Logger;
  metrics?: Metrics;
  clock?: Clock;
  adminToken?: string | undefined;
  /** Shared by the SigningKeys of many requests (the Workers entry keeps one per isolate). */
  keyCache?: KeyCache;
}): Services {
  const clock = parts.clock ?? systemClock;
  const signing = new SigningKeys(
    parts.database.db,
    parts.signer,
    clock,
    parts.config,
    parts.log,
    parts.keyCache,
  );
  const keys = new KeyVerifier(parts.database.db, parts.store, parts.peppers, clock, parts.log);
  return {
    config: parts.config,
    db: parts.database.db,
    store: parts.store,
    log: parts.log,
    metrics: parts.metrics ?? createMetrics(),
    clock,
    signing,
    keys,
    preAuth: parts.preAuth ?? createPreAuthLimiter({ log: parts.log }),
    authFailures: parts.authFailures ?? createAuthFailureLimiter({ log: parts.log }),
    spend: new SpendRecorder(parts.database.db, parts.store, clock, parts.log),
    budgetThresholds: new BudgetThresholds(parts.store, parts.log),
    upstream:
      parts.upstream ??
      createUpstream(parts.config, { signing, clock, log: parts.log }, parts.upstreamOverrides),
    ...(parts.clientAddress === undefined ? {} : { clientAddress: parts.clientAddress }),
    engines: { db: parts.database.engine, store: parts.store.engine },
    ...(parts.adminToken === undefined ? {} : { adminToken: parts.adminToken }),
  };
}
