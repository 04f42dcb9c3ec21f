import * as v from 'valibot';
import { MAX_AMOUNT_MICRO } from './budget/bounds.js';
import { largestEstimateTokens } from './inference/estimate.js';
import { jsonSetting } from './json-setting.js';
import { parsePeppers } from './keys/peppers.js';
import { DEFAULT_PACKS, type Pack, parsePacks } from './payments/packs.js';
import { costMicro, DEFAULT_PRICES, isPool, POOLS, type Pool, type Prices } from './pricing/pricing.js';
import { DEFAULT_TIERS, TiersOverride, type TierTable } from './tenants/tiers.js';

/**
 * Every environment variable spicegate reads (DESIGN.md §6), parsed once by the entry.
 * Nothing below the entry reads `process.env`; it receives a `Config`.
 *
 * Rules: an empty string counts as unset; a bad value stops start-up with one line naming the
 * variable (never its value: several of these are secrets) and exit code 2.
 */

// `name=value,name=value`: model names as OpenAI clients send them (letters, digits, . _ : / -).
const PAIRS =
  /^[A-Za-z0-9._:/-]{1,64}=[A-Za-z0-9._:/-]{1,64}(,[A-Za-z0-9._:/-]{1,64}=[A-Za-z0-9._:/-]{1,64})*$/;

function pairs(text: string): Record<string, string> {
  return Object.fromEntries(text.split(',').map((pair) => pair.split('=') as [string, string]));
}

const integer = (min: number, max: number) =>
  v.pipe(
    v.string(),
    v.regex(/^-?\d+$/, `must be an integer from ${min} to ${max}`),
    v.transform(Number),
    v.number(),
    v.minValue(min, `must be an integer from ${min} to ${max}`),
    v.maxValue(max, `must be an integer from ${min} to ${max}`),
  );

const urlWithScheme = (schemes: readonly string[]) =>
  v.pipe(
    v.string(),
    v.check(
      (value) => schemes.includes(URL.parse(value)?.protocol ?? ''),
      `must be a URL starting with ${schemes.map((s) => `${s}//`).join(' or ')}`,
    ),
  );

const boolean = v.pipe(
  v.string(),
  v.picklist(['true', 'false', '1', '0'], 'must be true, false, 1 or 0'),
  v.transform((value) => value === 'true' || value === '1'),
);

const secret = (minLength: number) =>
  v.pipe(v.string(), v.minLength(minLength, `must be at least ${minLength} characters`));

// 10^9: the most the pool_gate script takes for a bucket's capacity and refill.
const POOL_LIMITS_MESSAGE = `must be a JSON object from pools (${POOLS.join(', ')}) to tokens per minute, 1 to 1000000000`;
const PoolLimits = v.pipe(
  jsonSetting(POOL_LIMITS_MESSAGE),
  v.record(
    v.picklist(POOLS, POOL_LIMITS_MESSAGE),
    v.pipe(
      v.number(POOL_LIMITS_MESSAGE),
      v.integer(POOL_LIMITS_MESSAGE),
      v.minValue(1, POOL_LIMITS_MESSAGE),
      v.maxValue(1_000_000_000, POOL_LIMITS_MESSAGE),
    ),
    POOL_LIMITS_MESSAGE,
  ),
);

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export const UPSTREAMS = ['local', 'finn', 'openai'] as const;
export const JOB_MODES = ['on', 'off'] as const;
export const PAYMENT_MODES = ['on', 'off'] as const;

const EnvSchema = v.object({
  PORT: v.optional(integer(0, 65535), '8787'),
  HOST: v.optional(v.pipe(v.string(), v.minLength(1)), '127.0.0.1'),
  DATA_DIR: v.optional(v.string(), './.data'),
  DATABASE_URL: v.optional(urlWithScheme(['postgres:', 'postgresql:'])),
  // 1 MiB: the largest prompt we expect is far below this; bigger bodies are refused before any
  // authentication or parsing.
  MAX_BODY_BYTES: v.optional(integer(1024, 64 * 1024 * 1024), '1048576'),
  METRICS_TOKEN: v.optional(secret(16)),
  REDIS_URL: v.optional(urlWithScheme(['redis:', 'rediss:'])),
  // Upstash's REST API (Workers, or Node without a TCP Redis); both or neither.
  UPSTASH_REDIS_REST_URL: v.optional(urlWithScheme(['https:', 'http:'])),
  UPSTASH_REDIS_REST_TOKEN: v.optional(secret(8)),
  UPSTREAM: v.optional(v.picklist(UPSTREAMS, `must be one of ${UPSTREAMS.join(', ')}`), 'local'),
  UPSTREAM_URL: v.optional(urlWithScheme(['http:', 'https:'])),
  UPSTREAM_API_KEY: v.optional(v.string()),
  LOCAL_MODEL_TOKENS: v.optional(integer(1, 100_000), '32'),
  LOCAL_MODEL_DELAY_MS: v.optional(integer(0, 60_000), '0'),
  // 5 s / 60 s (DESIGN.md §4): a healthy upstream connects in milliseconds; 60 s bounds the longest
  // stream and stays far below the 5 min reservation TTL.
  UPSTREAM_CONNECT_TIMEOUT_MS: v.optional(integer(1, 60_000), '5000'),
  UPSTREAM_TIMEOUT_MS: v.optional(integer(1, 240_000), '60000'),
  // 20 s (default, or UPSTREAM_TIMEOUT_MS if lower): an upstream that has not started answering by
  // then is hung; the caller gets a 503 and its reservation back instead of waiting out the total.
  UPSTREAM_FIRST_BYTE_TIMEOUT_MS: v.optional(integer(1, 240_000)),
  MODEL_ALIASES: v.optional(
    v.pipe(v.string(), v.regex(PAIRS, 'must be name=pool pairs separated by commas'), v.transform(pairs)),
  ),
  TIERS: v.optional(TiersOverride),
  // Tokens per minute per pool across all tenants, protecting the upstream (`{"reasoning":100000}`).
  POOL_LIMITS: v.optional(PoolLimits),
  POOL_PRICES: v.optional(
    v.pipe(
      v.string(),
      v.regex(/^[a-z]+=\d{1,12}(,[a-z]+=\d{1,12})*$/, 'must be pool=micro-credits-per-1000-tokens pairs'),
      v.transform(pairs),
    ),
  ),
  UPSTREAM_MODELS: v.optional(
    v.pipe(v.string(), v.regex(PAIRS, 'must be pool=model pairs separated by commas'), v.transform(pairs)),
  ),
  TRUST_PROXY_HOPS: v.optional(integer(0, 16), '0'),
  // 20 calls per tRPC batch: what a client's httpBatchLink gathers in one tick in practice; a bigger
  // batch is refused (400) before any call runs, so one request cannot carry unbounded work.
  TRPC_MAX_BATCH: v.optional(integer(1, 1_000), '20'),
  // `<version>:<secret>` entries, comma-separated; the highest version hashes new keys (src/keys/peppers.ts).
  API_KEY_PEPPERS: v.optional(
    v.pipe(
      v.string(),
      v.check(
        (text) => !('error' in parsePeppers(text)),
        'must be <version>:<secret of 32+ characters>, comma-separated',
      ),
    ),
  ),
  API_KEYS_MAX_ACTIVE: v.optional(integer(1, 1_000), '10'),
  // 32 characters: a bootstrap admin secret must not be guessable.
  ADMIN_TOKEN: v.optional(secret(32)),
  // One IPN secret, or two separated by a comma while the provider's secret is rotated (the first
  // is the current one; both verify until the old one is removed).
  NOWPAYMENTS_IPN_SECRET: v.optional(
    v.pipe(
      v.string(),
      v.check((text) => {
        const secrets = text.split(',').map((secret) => secret.trim());
        return secrets.length <= 2 && secrets.every((secret) => secret.length >= 8);
      }, 'must be one secret of at least 8 characters, or two separated by a comma'),
    ),
  ),
  NOWPAYMENTS_API_KEY: v.optional(v.string()),
  NOWPAYMENTS_API_URL: v.optional(urlWithScheme(['https:', 'http:']), 'https://api.nowpayments.io/v1'),
  // Where the provider posts IPNs for invoices this gateway creates (its public URL of
  // POST /api/crypto/webhook); unset, the provider uses the URL set in its dashboard.
  NOWPAYMENTS_IPN_URL: v.optional(urlWithScheme(['https:', 'http:'])),
  // Payments switched off: the webhook answers 503 (the provider retries later) and no invoice is created.
  PAYMENTS: v.optional(v.picklist(PAYMENT_MODES, `must be one of ${PAYMENT_MODES.join(', ')}`), 'on'),
  // Credit packs (DESIGN.md §4): `name=price:micro-credits`, the price in US dollars.
  PAYMENT_PACKS: v.optional(
    v.pipe(
      v.string(),
      v.regex(
        /^[a-z][a-z0-9_-]{0,31}=\d{1,6}(\.\d{1,2})?:[1-9]\d{0,14}(,[a-z][a-z0-9_-]{0,31}=\d{1,6}(\.\d{1,2})?:[1-9]\d{0,14})*$/,
        'must be name=price-in-usd:micro-credits pairs separated by commas',
      ),
      v.transform(parsePacks),
    ),
  ),
  LOG_LEVEL: v.optional(v.picklist(LOG_LEVELS, `must be one of ${LOG_LEVELS.join(', ')}`), 'info'),
  OTEL_ENABLED: v.optional(boolean, 'false'),
  NATS_URL: v.optional(urlWithScheme(['nats:', 'tls:'])),
  // Signing (DESIGN.md §4): issuer of the gateway's tokens, audience of its S2S tokens.
  JWT_ISSUER: v.optional(v.pipe(v.string(), v.minLength(1)), 'spicegate'),
  S2S_AUDIENCE: v.optional(v.pipe(v.string(), v.minLength(1)), 'finn'),
  // Private signing keys from configuration (a JSON array of private ES256 JWKs with kid), for
  // runtimes without a DATA_DIR (Workers) or several instances sharing keys.
  SIGNING_PRIVATE_JWKS: v.optional(v.pipe(v.string(), v.minLength(2))),
  // Rotate automatically every N days (off unless set); warn when the active key is older than this.
  SIGNING_ROTATE_DAYS: v.optional(integer(1, 3650)),
  SIGNING_KEY_MAX_AGE_DAYS: v.optional(integer(1, 3650), '90'),
  // How long verifiers may cache our JWKS (Cache-Control max-age) and the clock skew we allow: a new
  // key signs only after both have passed since it was published.
  JWKS_MAX_AGE_SECONDS: v.optional(integer(1, 86_400), '300'),
  JWT_CLOCK_SKEW_SECONDS: v.optional(integer(0, 300), '30'),
  S2S_TOKEN_TTL_SECONDS: v.optional(integer(1, 3_600), '60'),
  // Tokens for tRPC callers issued by `spicegate token` live at most this long (old keys stay
  // published that long after a rotation).
  ADMIN_TOKEN_MAX_TTL_SECONDS: v.optional(integer(60, 30 * 86_400), '86400'),
  // An external issuer of tRPC caller tokens (all three or none).
  AUTH_JWKS_URL: v.optional(urlWithScheme(['https:', 'http:'])),
  AUTH_ISSUER: v.optional(v.pipe(v.string(), v.minLength(1))),
  AUTH_AUDIENCE: v.optional(v.pipe(v.string(), v.minLength(1))),
  // 25 s: under the 30 s that most orchestrators wait between SIGTERM and SIGKILL, so in-flight
  // streams get as long as possible and the connections are still closed by us, not killed.
  SHUTDOWN_TIMEOUT_MS: v.optional(integer(0, 600_000), '25000'),
  // 5 min: how often the conservation job checks each tenant's store balance against the book; a
  // drift it repairs has been live at most this long (plus the check's confirmation wait).
  CONSERVATION_INTERVAL_MS: v.optional(integer(10_000, 86_400_000), '300000'),
  // 5 min: how often the payment-reconciliation job asks the provider about payments no IPN has
  // moved for 15 min; a lost IPN is made good at most this long after that.
  PAYMENT_RECONCILE_INTERVAL_MS: v.optional(integer(10_000, 86_400_000), '300000'),
  // 5 min (DESIGN.md §1): far longer than the longest stream, so only a fault lets the reaper
  // release a reservation before its settlement. 1 s .. 1 day: the admit script's bounds.
  RESERVATION_TTL_MS: v.optional(integer(1_000, 86_400_000), '300000'),
  // 30 s: a reservation left by a crashed gateway is released at most this long after its deadline.
  REAPER_INTERVAL_MS: v.optional(integer(100, 3_600_000), '30000'),
  // The background jobs inside `serve`; `off` when `spicegate worker` runs them elsewhere.
  JOBS: v.optional(v.picklist(JOB_MODES, `must be one of ${JOB_MODES.join(', ')}`), 'on'),
  // bench:gateway's comparison only: tenant work skips its row-level-security transaction.
  SPICEGATE_BENCH_RLS_BYPASS: v.optional(boolean, 'false'),
});

// Parsed and checked, but their features have not landed yet (tracing, usage events):
// a start with one of them set warns once per variable rather than pretending they work.
const NOT_YET_IN_EFFECT = ['OTEL_ENABLED', 'NATS_URL'] as const;

export type Env = Record<string, string | undefined>;
/** Which upstream adapter serves (`UPSTREAM`); the adapter itself is `Upstream` in src/upstream/port.ts. */
export type UpstreamKind = (typeof UPSTREAMS)[number];
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface Config {
  port: number;
  host: string;
  dataDir: string;
  databaseUrl?: string;
  maxBodyBytes: number;
  metricsToken?: string;
  redisUrl?: string;
  upstash?: { url: string; token: string };
  upstream: UpstreamKind;
  upstreamUrl?: string;
  upstreamApiKey?: string;
  localModelTokens: number;
  localModelDelayMs: number;
  upstreamConnectTimeoutMs: number;
  upstreamTimeoutMs: number;
  /**
   * How long past `upstreamTimeoutMs` the relay still waits on a client that stopped reading before
   * it gives up on it and settles. Not an environment variable: with the longest upstream timeout
   * (240 s) the sum must stay under the 5 min reservation TTL, or the reaper frees money still spent.
   */
  relayGraceMs: number;
  /** How long the upstream may take to start answering (its response head), retries included. */
  upstreamFirstByteTimeoutMs: number;
  /** OpenAI-style model names callers may use for a pool (`MODEL_ALIASES`). */
  modelAliases: Record<string, string>;
  /** The model an OpenAI-compatible upstream is asked for, per pool (`UPSTREAM_MODELS`; default the pool's name). */
  upstreamModels: Record<string, string>;
  /** Limits and pools per tenant tier 1–9 (`TIERS` overrides the defaults). */
  tiers: TierTable;
  /** Micro-credits per 1,000 tokens per pool (`POOL_PRICES` overrides the defaults). */
  prices: Prices;
  /** Tokens per minute per pool across all tenants (`POOL_LIMITS`); a pool not named has no gate. */
  poolLimits: Partial<Record<Pool, number>>;
  trustProxyHops: number;
  /** The most calls one tRPC batch request may carry (`TRPC_MAX_BATCH`). */
  trpcMaxBatch: number;
  apiKeyPeppers?: string;
  adminToken?: string;
  /** The IPN secrets that verify a webhook: the current one first, then the old one during a rotation. */
  nowpaymentsIpnSecrets: string[];
  nowpaymentsApiKey?: string;
  nowpaymentsApiUrl: string;
  /** How long one NOWPayments API call may take; not an environment variable (tests shorten it). */
  nowpaymentsTimeoutMs?: number;
  /** The IPN callback URL sent with each invoice (`NOWPAYMENTS_IPN_URL`). */
  nowpaymentsIpnUrl?: string;
  /** `PAYMENTS`: off → the webhook answers 503 and no invoice is created. */
  payments: (typeof PAYMENT_MODES)[number];
  /** Credit packs by name (`PAYMENT_PACKS` replaces the defaults). */
  packs: Record<string, Pack>;
  logLevel: LogLevel;
  otelEnabled: boolean;
  natsUrl?: string;
  shutdownTimeoutMs: number;
  /** How often the conservation job runs (`CONSERVATION_INTERVAL_MS`). */
  conservationIntervalMs: number;
  /** How often the payment-reconciliation job runs (`PAYMENT_RECONCILE_INTERVAL_MS`). */
  paymentReconcileIntervalMs: number;
  /** How long a reservation lives before the reaper may release it (`RESERVATION_TTL_MS`). */
  reservationTtlMs: number;
  /** How often the reaper job runs (`REAPER_INTERVAL_MS`). */
  reaperIntervalMs: number;
  /** Whether `serve` runs the shared background jobs (`JOBS`); `spicegate worker` always does. */
  jobs: (typeof JOB_MODES)[number];
  /** bench:gateway's "RLS bypassed" variant (`SPICEGATE_BENCH_RLS_BYPASS`): never in production. */
  benchRlsBypass: boolean;
  jwtIssuer: string;
  s2sAudience: string;
  signingPrivateJwks?: string;
  signingRotateDays?: number;
  signingKeyMaxAgeDays: number;
  apiKeysMaxActive: number;
  jwksMaxAgeSeconds: number;
  jwtClockSkewSeconds: number;
  s2sTokenTtlSeconds: number;
  adminTokenMaxTtlSeconds: number;
  externalAuth?: { jwksUrl: string; issuer: string; audience: string };
  /** Variables that were set but do nothing yet (NOT_YET_IN_EFFECT); the entry warns about each. */
  notYetInEffect: string[];
}

export type ConfigResult = { ok: true; config: Config } | { ok: false; variable: string; message: string };

/** The variable names the schema knows, for the README table and for tests. */
export const ENV_NAMES = Object.keys(EnvSchema.entries) as (keyof typeof EnvSchema.entries)[];

export function parseConfig(env: Env): ConfigResult {
  const input: Record<string, string> = {};
  for (const name of ENV_NAMES) {
    const value = env[name];
    if (value !== undefined && value.trim() !== '') input[name] = value;
  }

  const parsed = v.safeParse(EnvSchema, input);
  if (!parsed.success) {
    const issue = parsed.issues[0];
    const variable = String(issue.path?.[0]?.key ?? 'environment');
    return { ok: false, variable, message: `${variable} ${issue.message}` };
  }
  const e = parsed.output;

  if ((e.UPSTASH_REDIS_REST_URL === undefined) !== (e.UPSTASH_REDIS_REST_TOKEN === undefined)) {
    const missing =
      e.UPSTASH_REDIS_REST_URL === undefined ? 'UPSTASH_REDIS_REST_URL' : 'UPSTASH_REDIS_REST_TOKEN';
    return {
      ok: false,
      variable: missing,
      message: `${missing} is required with the other UPSTASH_REDIS_REST_ variable`,
    };
  }
  const auth = [e.AUTH_JWKS_URL, e.AUTH_ISSUER, e.AUTH_AUDIENCE];
  if (auth.some((value) => value !== undefined) && auth.some((value) => value === undefined)) {
    const names = ['AUTH_JWKS_URL', 'AUTH_ISSUER', 'AUTH_AUDIENCE'];
    const missing = names[auth.indexOf(undefined)] as string;
    return { ok: false, variable: missing, message: `${missing} is required with the other AUTH_ variables` };
  }
  if (e.SIGNING_PRIVATE_JWKS !== undefined && !isJsonArray(e.SIGNING_PRIVATE_JWKS)) {
    return {
      ok: false,
      variable: 'SIGNING_PRIVATE_JWKS',
      message: 'SIGNING_PRIVATE_JWKS must be a JSON array of private JWKs',
    };
  }
  const badAlias = Object.entries(e.MODEL_ALIASES ?? {}).find(
    ([alias, pool]) => !isPool(pool) || isPool(alias),
  );
  if (badAlias !== undefined) {
    return {
      ok: false,
      variable: 'MODEL_ALIASES',
      message:
        'MODEL_ALIASES must map names that are not pools to pools (cheap, standard, reasoning, architect, flagship)',
    };
  }
  if (Object.entries(e.POOL_PRICES ?? {}).some(([pool, price]) => !isPool(pool) || BigInt(price) < 1n)) {
    return {
      ok: false,
      variable: 'POOL_PRICES',
      message: 'POOL_PRICES must map pools to prices of at least 1',
    };
  }
  // The largest request's reservation must be an amount the engine accepts, or every such request
  // would be a 500; only prices far beyond any real model's with a very large MAX_BODY_BYTES reach it.
  const prices: Prices = { ...DEFAULT_PRICES, ...mapValues(e.POOL_PRICES ?? {}, BigInt) };
  const largestTokens = largestEstimateTokens(e.MAX_BODY_BYTES);
  const tooDear = POOLS.find((pool) => costMicro(pool, largestTokens, prices) > MAX_AMOUNT_MICRO);
  if (tooDear !== undefined) {
    return {
      ok: false,
      variable: 'POOL_PRICES',
      message: `POOL_PRICES: ${tooDear} is so dear that a request of MAX_BODY_BYTES would reserve more than ${MAX_AMOUNT_MICRO} micro-credits`,
    };
  }
  if (Object.keys(e.UPSTREAM_MODELS ?? {}).some((pool) => !isPool(pool))) {
    return {
      ok: false,
      variable: 'UPSTREAM_MODELS',
      message: 'UPSTREAM_MODELS must map pools to model names',
    };
  }
  if (e.UPSTREAM !== 'local' && e.UPSTREAM_URL === undefined) {
    return {
      ok: false,
      variable: 'UPSTREAM_URL',
      message: `UPSTREAM_URL is required when UPSTREAM=${e.UPSTREAM}`,
    };
  }

  if (
    e.UPSTREAM_FIRST_BYTE_TIMEOUT_MS !== undefined &&
    e.UPSTREAM_FIRST_BYTE_TIMEOUT_MS > e.UPSTREAM_TIMEOUT_MS
  ) {
    return {
      ok: false,
      variable: 'UPSTREAM_FIRST_BYTE_TIMEOUT_MS',
      message: 'UPSTREAM_FIRST_BYTE_TIMEOUT_MS must not exceed UPSTREAM_TIMEOUT_MS',
    };
  }

  const config: Config = {
    port: e.PORT,
    host: e.HOST,
    dataDir: e.DATA_DIR,
    maxBodyBytes: e.MAX_BODY_BYTES,
    upstream: e.UPSTREAM,
    localModelTokens: e.LOCAL_MODEL_TOKENS,
    localModelDelayMs: e.LOCAL_MODEL_DELAY_MS,
    upstreamConnectTimeoutMs: e.UPSTREAM_CONNECT_TIMEOUT_MS,
    upstreamTimeoutMs: e.UPSTREAM_TIMEOUT_MS,
    relayGraceMs: 30_000,
    upstreamFirstByteTimeoutMs: e.UPSTREAM_FIRST_BYTE_TIMEOUT_MS ?? Math.min(20_000, e.UPSTREAM_TIMEOUT_MS),
    modelAliases: e.MODEL_ALIASES ?? {},
    upstreamModels: e.UPSTREAM_MODELS ?? {},
    tiers: e.TIERS ?? DEFAULT_TIERS,
    prices,
    poolLimits: e.POOL_LIMITS ?? {},
    trustProxyHops: e.TRUST_PROXY_HOPS,
    trpcMaxBatch: e.TRPC_MAX_BATCH,
    nowpaymentsApiUrl: e.NOWPAYMENTS_API_URL,
    nowpaymentsIpnSecrets: e.NOWPAYMENTS_IPN_SECRET?.split(',').map((secret) => secret.trim()) ?? [],
    payments: e.PAYMENTS,
    packs: e.PAYMENT_PACKS ?? DEFAULT_PACKS,
    logLevel: e.LOG_LEVEL,
    otelEnabled: e.OTEL_ENABLED,
    shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_MS,
    conservationIntervalMs: e.CONSERVATION_INTERVAL_MS,
    paymentReconcileIntervalMs: e.PAYMENT_RECONCILE_INTERVAL_MS,
    reservationTtlMs: e.RESERVATION_TTL_MS,
    reaperIntervalMs: e.REAPER_INTERVAL_MS,
    jobs: e.JOBS,
    benchRlsBypass: e.SPICEGATE_BENCH_RLS_BYPASS,
    jwtIssuer: e.JWT_ISSUER,
    s2sAudience: e.S2S_AUDIENCE,
    signingKeyMaxAgeDays: e.SIGNING_KEY_MAX_AGE_DAYS,
    apiKeysMaxActive: e.API_KEYS_MAX_ACTIVE,
    jwksMaxAgeSeconds: e.JWKS_MAX_AGE_SECONDS,
    jwtClockSkewSeconds: e.JWT_CLOCK_SKEW_SECONDS,
    s2sTokenTtlSeconds: e.S2S_TOKEN_TTL_SECONDS,
    adminTokenMaxTtlSeconds: e.ADMIN_TOKEN_MAX_TTL_SECONDS,
    // OTEL_ENABLED=false asks for nothing, so only a true value is reported.
    notYetInEffect: NOT_YET_IN_EFFECT.filter((name) =>
      name === 'OTEL_ENABLED' ? e.OTEL_ENABLED : input[name] !== undefined,
    ),
    ...(e.AUTH_JWKS_URL !== undefined && e.AUTH_ISSUER !== undefined && e.AUTH_AUDIENCE !== undefined
      ? { externalAuth: { jwksUrl: e.AUTH_JWKS_URL, issuer: e.AUTH_ISSUER, audience: e.AUTH_AUDIENCE } }
      : {}),
    ...(e.UPSTASH_REDIS_REST_URL !== undefined && e.UPSTASH_REDIS_REST_TOKEN !== undefined
      ? { upstash: { url: e.UPSTASH_REDIS_REST_URL, token: e.UPSTASH_REDIS_REST_TOKEN } }
      : {}),
    ...definedOnly({
      databaseUrl: e.DATABASE_URL,
      metricsToken: e.METRICS_TOKEN,
      redisUrl: e.REDIS_URL,
      upstreamUrl: e.UPSTREAM_URL,
      upstreamApiKey: e.UPSTREAM_API_KEY,
      apiKeyPeppers: e.API_KEY_PEPPERS,
      adminToken: e.ADMIN_TOKEN,
      nowpaymentsApiKey: e.NOWPAYMENTS_API_KEY,
      nowpaymentsIpnUrl: e.NOWPAYMENTS_IPN_URL,
      natsUrl: e.NATS_URL,
      signingPrivateJwks: e.SIGNING_PRIVATE_JWKS,
      signingRotateDays: e.SIGNING_ROTATE_DAYS,
    }),
  };
  return { ok: true, config };
}

function mapValues<T>(record: Record<string, string>, map: (value: string) => T): Record<string, T> {
  return Object.fromEntries(Object.entries(record).map(([name, value]) => [name, map(value)]));
}

function isJsonArray(text: string): boolean {
  try {
    return Array.isArray(JSON.parse(text));
  } catch {
    return false;
  }
}

/** Drops undefined members, so optional fields are absent rather than `undefined`. */
function definedOnly<T extends Record<string, unknown>>(
  record: T,
): { [K in keyof T]?: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(record).filter(([, value]) => value !== undefined)) as {
    [K in keyof T]?: Exclude<T[K], undefined>;
  };
}

/** True when the gateway runs on its embedded database (no DATABASE_URL). */
export function isEmbedded(config: Config): boolean {
  return config.databaseUrl === undefined;
}

/**
 * A reservation TTL shorter than the longest stream (upstream timeout plus the relay's grace) lets
 * the reaper release a live stream's reservation: its settlement still charges (LATE_FINALIZE),
 * but the tenant could meanwhile spend the same credits twice. Allowed (tests use it), not advised.
 */
export function warnShortReservationTtl(
  config: Config,
  log: { warn(fields: object, message: string): void },
): void {
  const longestStreamMs = config.upstreamTimeoutMs + config.relayGraceMs;
  if (config.reservationTtlMs <= longestStreamMs) {
    log.warn(
      { reservationTtlMs: config.reservationTtlMs, longestStreamMs },
      'RESERVATION_TTL_MS is shorter than the longest stream: a live reservation may be reaped',
    );
  }
}

/** One warning per variable that is set but whose feature has not landed. */
export function warnNotYetInEffect(
  config: Config,
  log: { warn(fields: object, message: string): void },
): void {
  for (const variable of config.notYetInEffect) {
    log.warn({ variable }, `${variable} is set but not yet in effect: its feature is not built`);
  }
}
