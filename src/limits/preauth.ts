import type { Context, MiddlewareHandler } from 'hono';
import { systemClock } from '../clock.js';
import { AppError } from '../errors.js';
import { clientBucket, isNoAddressBucket, NO_ADDRESS_PREFIX, socketAddress } from '../http/client-ip.js';
import { type AppEnv, errorResponse } from '../http/context.js';
import type { Logger } from '../observability/logger.js';
import { rateLimitHeaders } from './headers.js';

/**
 * Pre-auth protection (DESIGN.md §3 last bullet, §6 "pre-auth per-IP limit 100/min"): a per-client
 * limit on the routes that answer before anyone is authenticated, keyed by `clientBucket`
 * (src/http/client-ip.ts), counted per route so a verifier polling JWKS never eats the budget of
 * the payment provider's webhooks from the same address.
 *
 * Shared state: @upstash/ratelimit's sliding window over Redis (through the ioredis adapter),
 * with its ephemeral cache: once a bucket is denied, this process answers it from memory until
 * the window resets, so a flood from one address costs no Redis call at all.
 * Sliding rather than fixed window: a fixed window lets a client send 2 × the limit across a
 * window boundary and counts denied calls; the sliding window approximates a rolling minute at
 * the same cost (one EVALSHA, two keys) and a denial consumes nothing.
 *
 * When the store cannot answer — the library's own `timeout` resolves as `success: true,
 * reason: 'timeout'`, i.e. FAILS OPEN — we never pass that through: every route falls back to an
 * in-process limiter with the same limit (per instance, so N instances admit up to N × the limit
 * while Redis is down). Per route:
 * - `jwks` (GET /.well-known/jwks.json): local fallback. DESIGN.md §1 requires JWKS to keep working
 *   while Redis is down (it is served from memory), so fail-closed would break token verification
 *   everywhere during an outage; fail-open would leave it floodable. Limited locally it is neither.
 * - `crypto-webhook` (POST /api/crypto/webhook): local fallback. Processing needs Postgres, not
 *   Redis, so a Redis outage must not delay credits; NOWPayments retries a refused IPN anyway, so
 *   a local 429 under a flood loses nothing. Its per-payment throttle (10/hour) is separate.
 * - `csp-report` (POST /api/v1/csp-report): local fallback. Reports are best-effort and browsers
 *   do not retry; the local limit still bounds what a flood can write to the log.
 * - `trpc` (everything under /trpc): local fallback. Every request counts, before its bearer is
 *   looked at, so a flood of unauthenticated batches is refused without parsing a call; a typed
 *   client batches its calls (up to TRPC_MAX_BATCH per request), so 100 requests are far more calls.
 * - `auth-failure`: not a route but the failed-authentication budget of src/limits/auth-failures.ts,
 *   which runs on a limiter of its own (its own limit and prefix).
 * Without Redis at all (embedded defaults, one process) the in-process limiter is the limiter.
 */
export type PreAuthRoute = 'jwks' | 'crypto-webhook' | 'csp-report' | 'trpc' | 'auth-failure';

export interface PreAuthDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** When the current window ends (ms since the epoch); a denied caller may retry then. */
  resetAtMs: number;
  /** `cache`: denied from the ephemeral cache, no Redis call; `fallback`: the in-process limiter. */
  source: 'redis' | 'fallback' | 'cache';
}

export interface PreAuthLimiter {
  readonly limitPerMinute: number;
  check(bucket: string, route: PreAuthRoute): Promise<PreAuthDecision>;
}

/** One shared sliding window (@upstash/ratelimit's answer, as `limit()` gives it). */
export interface SharedWindow {
  limit(
    id: string,
  ): Promise<{ success: boolean; limit: number; remaining: number; reset: number; reason?: string }>;
}

/**
 * Sliding windows counted in a store all instances share: `redisWindows` (ioredis-ratelimit-adapter.ts,
 * Node). An interface, so the Workers bundle, whose limiters are in-process, carries no rate-limit
 * library.
 */
export interface SharedWindows {
  /** Whether a command can be sent now (a reconnecting client would queue it). */
  usable(): boolean;
  window(options: {
    limit: number;
    windowMs: number;
    prefix: string;
    ephemeralCache: Map<string, number>;
    timeoutMs: number;
  }): SharedWindow;
}

export interface PreAuthLimiterOptions {
  /** Shared counters across instances; without it, the in-process limiter only. */
  shared?: SharedWindows;
  /** Per client bucket and route (DESIGN.md §6: 100), per window (a minute unless `windowMs`). */
  limitPerMinute?: number;
  /** The window the limit counts over; default a minute (the per-payment IPN throttle: an hour). */
  windowMs?: number;
  /**
   * All `noaddr:` buckets of a route together (see client-ip.ts): what a caller that varies its
   * headers can get at most. Default 10 × limitPerMinute, so a few honest address-less callers
   * (each also held to limitPerMinute) do not starve one another.
   */
  noAddressLimitPerMinute?: number;
  log: Logger;
  /** Redis key prefix of the library (inside the ioredis client's own keyPrefix). */
  prefix?: string;
  /** How long to wait for Redis before the in-process limiter decides. */
  timeoutMs?: number;
  /** Bound on the in-process state (fallback counters, ephemeral cache entries). */
  maxLocalBuckets?: number;
}

const WINDOW_MS = 60_000;
// 200 ms: a loopback EVALSHA takes ~0.1 ms and a network hop a few ms; a pre-auth route must stay
// fast while the store is slow, and the in-process limiter decides as well, so waiting the
// library's default 5 s (or our 500 ms command timeout) buys nothing.
const DEFAULT_TIMEOUT_MS = 200;
// 1 s: a store that just failed is not asked again for a second, so a flood during an outage
// neither queues commands in ioredis nor pays the timeout on every request.
const STORE_RETRY_MS = 1_000;
// 100,000 buckets ≈ 10 MB: far more distinct clients per minute than one instance serves before
// it is saturated anyway; past it the oldest entries go first.
const DEFAULT_MAX_LOCAL_BUCKETS = 100_000;
// Outages repeat per request; one log line per interval is enough to see one.
const LOG_INTERVAL_MS = 10_000;

export function createPreAuthLimiter(options: PreAuthLimiterOptions): PreAuthLimiter {
  const limitPerMinute = options.limitPerMinute ?? 100;
  const noAddressLimit = options.noAddressLimitPerMinute ?? limitPerMinute * 10;
  const maxLocalBuckets = options.maxLocalBuckets ?? DEFAULT_MAX_LOCAL_BUCKETS;
  const prefix = options.prefix ?? 'preauth';
  const windowMs = options.windowMs ?? WINDOW_MS;
  const local = new LocalSlidingWindow(windowMs, maxLocalBuckets);
  const shared = options.shared;

  const limiters = new Map<number, SharedWindow>();
  if (shared !== undefined) {
    for (const limit of new Set([limitPerMinute, noAddressLimit])) {
      limiters.set(
        limit,
        shared.window({
          limit,
          windowMs,
          // The limit is in the key, so two limits never share counters.
          prefix: `${prefix}:${limit}`,
          ephemeralCache: new BoundedMap<string, number>(maxLocalBuckets),
          timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
        }),
      );
    }
  }

  let storeRetryAt = 0;
  let lastLoggedAt = 0;
  const storeFailed = (reason: string) => {
    const now = systemClock.now();
    storeRetryAt = now + STORE_RETRY_MS;
    if (now - lastLoggedAt < LOG_INTERVAL_MS) return;
    lastLoggedAt = now;
    options.log.warn({ reason }, 'pre-auth limiter: store unavailable, limiting in-process');
  };
  const storeUsable = () => shared !== undefined && systemClock.now() >= storeRetryAt && shared.usable();

  const take = async (id: string, limit: number): Promise<PreAuthDecision> => {
    const ratelimit = limiters.get(limit);
    if (ratelimit !== undefined && storeUsable()) {
      try {
        const result = await ratelimit.limit(id);
        if (result.reason !== 'timeout') {
          return {
            allowed: result.success,
            limit: result.limit,
            remaining: result.remaining,
            resetAtMs: result.reset,
            source: result.reason === 'cacheBlock' ? 'cache' : 'redis',
          };
        }
        storeFailed('timeout');
      } catch (error) {
        storeFailed(error instanceof Error ? error.message : String(error));
      }
    }
    return { ...local.take(id, limit, systemClock.now()), limit, source: 'fallback' };
  };

  return {
    limitPerMinute,
    check: async (bucket, route) => {
      // The bucket as a hash tag: the library's two window keys share one Redis Cluster slot.
      const own = await take(`${route}:{${bucket}}`, limitPerMinute);
      if (!own.allowed || !isNoAddressBucket(bucket)) return own;
      const all = await take(`${route}:{${NO_ADDRESS_PREFIX}*}`, noAddressLimit);
      return !all.allowed || all.remaining < own.remaining ? all : own;
    },
  };
}

export interface PreAuthLimitOptions {
  trustProxyHops: number;
  route: PreAuthRoute;
  /** The verified transport address; default: the Node socket peer. Workers pass CF-Connecting-IP. */
  address?: (c: Context<AppEnv>) => string | undefined;
  /** How a refusal is written; default the error shape of DESIGN.md §4 (/trpc answers in tRPC's). */
  render?: (c: Context<AppEnv>, error: AppError) => Response;
}

/**
 * The pre-auth limit as Hono middleware: 429 `rate_limited` (dimension `ip`) with `Retry-After`
 * when denied; `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds) always.
 */
export function preAuthLimit(
  limiter: PreAuthLimiter,
  options: PreAuthLimitOptions,
): MiddlewareHandler<AppEnv> {
  const address = options.address ?? socketAddress;
  const render = options.render ?? errorResponse;
  return async (c, next) => {
    const bucket = clientBucket({
      socketAddress: address(c),
      forwardedFor: c.req.header('x-forwarded-for'),
      trustProxyHops: options.trustProxyHops,
    });
    const decision = await limiter.check(bucket, options.route);
    const headers = decisionHeaders(decision);
    if (!decision.allowed) {
      for (const [name, value] of Object.entries(headers)) c.header(name, value);
      return render(c, rateLimitedError(decision, 'Too many requests from this address'));
    }
    await next();
    for (const [name, value] of Object.entries(headers)) c.header(name, value);
  };
}

/** 429 `rate_limited` for a denied decision (dimension `ip`, DESIGN.md §4 details). */
export function rateLimitedError(decision: PreAuthDecision, message: string, dimension = 'ip'): AppError {
  return new AppError('rate_limited', message, {
    dimension,
    limit: decision.limit,
    remaining: 0,
    retryAfterMs: retryAfterMs(decision),
  });
}

/** The rate-limit headers of a decision (src/limits/headers.ts). */
export function decisionHeaders(decision: PreAuthDecision): Record<string, string> {
  return rateLimitHeaders({
    limit: decision.limit,
    remaining: decision.allowed ? decision.remaining : 0,
    resetInMs: decision.resetAtMs - systemClock.now(),
    ...(decision.allowed ? {} : { retryAfterMs: retryAfterMs(decision) }),
  });
}

function retryAfterMs(decision: PreAuthDecision): number {
  return Math.max(1, decision.resetAtMs - systemClock.now());
}

/**
 * The in-process limiter: the same sliding-window estimate as the library's script (this window's
 * count plus the previous window's, weighted by how much of it is still in view), in a Map whose
 * size is bounded; past the bound the least recently inserted bucket is forgotten.
 */
class LocalSlidingWindow {
  private readonly entries = new Map<string, { window: number; current: number; previous: number }>();
  private sweptWindow = -1;

  constructor(
    private readonly windowMs: number,
    private readonly maxEntries: number,
  ) {}

  take(id: string, limit: number, nowMs: number): { allowed: boolean; remaining: number; resetAtMs: number } {
    const window = Math.floor(nowMs / this.windowMs);
    const resetAtMs = (window + 1) * this.windowMs;
    let entry = this.entries.get(id);
    if (entry === undefined) {
      if (this.entries.size >= this.maxEntries) this.evict(window);
      entry = { window, current: 0, previous: 0 };
      this.entries.set(id, entry);
    } else if (entry.window !== window) {
      entry.previous = entry.window === window - 1 ? entry.current : 0;
      entry.current = 0;
      entry.window = window;
    }
    const inView = 1 - (nowMs % this.windowMs) / this.windowMs;
    const previous = Math.floor(entry.previous * inView);
    if (previous + entry.current >= limit) return { allowed: false, remaining: 0, resetAtMs };
    entry.current += 1;
    return { allowed: true, remaining: Math.max(0, limit - previous - entry.current), resetAtMs };
  }

  /**
   * Drops entries that no longer count (older than the previous window) — one sweep per window at
   * most, so a full map of live entries costs O(1) per new bucket — else the oldest entry.
   */
  private evict(window: number): void {
    if (window !== this.sweptWindow) {
      this.sweptWindow = window;
      for (const [id, entry] of this.entries) {
        if (entry.window < window - 1) this.entries.delete(id);
      }
      if (this.entries.size < this.maxEntries) return;
    }
    const oldest = this.entries.keys().next();
    if (!oldest.done) this.entries.delete(oldest.value);
  }
}

/**
 * The ephemeral cache the library fills with denied identifiers; it only deletes an entry when
 * that identifier asks again after its reset, so without a bound a flood from many addresses
 * would grow it for good. Forgetting an entry only costs that identifier one Redis call.
 */
export class BoundedMap<K, V> extends Map<K, V> {
  constructor(private readonly maxSize: number) {
    super();
  }

  override set(key: K, value: V): this {
    if (!this.has(key) && this.size >= this.maxSize) {
      const oldest = this.keys().next();
      if (!oldest.done) this.delete(oldest.value);
    }
    return super.set(key, value);
  }
}

/**
 * The per-payment IPN throttle (DESIGN.md §6: 10 an hour per payment), counted before any HMAC work
 * under the payment the unverified body names, so a flood of forged IPNs for one payment costs one
 * counter and no verification. The same limiter as the per-IP one (shared over Redis when given,
 * in-process otherwise), over an hour; counted per subject across routes (`check`'s route is part
 * of the key).
 */
export function createPaymentThrottle(options: {
  log: Logger;
  shared?: SharedWindows;
  /** Per payment per hour; default 10. */
  limitPerHour?: number;
}): PreAuthLimiter {
  return createPreAuthLimiter({
    log: options.log,
    limitPerMinute: options.limitPerHour ?? 10,
    windowMs: 3_600_000,
    prefix: 'ipnpay',
    ...(options.shared === undefined ? {} : { shared: options.shared }),
  });
}
