import type { Context } from 'hono';
import type { Redis } from 'ioredis';
import { clientBucket, socketAddress } from '../http/client-ip.js';
import type { Logger } from '../observability/logger.js';
import type { Services } from '../services.js';
import { BoundedMap, createPreAuthLimiter, type PreAuthDecision } from './preauth.js';

/**
 * Failed authentications per client (bucket of src/http/client-ip.ts): every API key that does
 * not verify (malformed, unknown, wrong secret, revoked; a request with no credentials is not a guess) and every tRPC bearer that does not
 * resolve to a caller counts; a success never does. Past the budget the client gets 429
 * `rate_limited` (dimension `ip`) until its window resets for anything but a key the instance
 * already holds verified (src/http/api-key-auth.ts) or a bearer that resolves (routers/trpc.ts) —
 * so a guessing client learns nothing more and costs no database work, while valid callers behind
 * the same address (a NAT, a proxy without TRUST_PROXY_HOPS) keep working.
 *
 * Cost on the hot path: none. A success is never counted, and the refusal of a blocked client is
 * answered from this process's memory (`refusal`): only a failure costs a store call (one
 * EVALSHA on the sliding window of the pre-auth limiter, with its in-process fallback). A denied
 * failure blocks the client here until the window resets. Another instance learns of the block
 * at the client's first failure there (the shared counter already denies it), so a guesser gets
 * at most the budget across all instances.
 *
 * Nobody can spend another client's budget: the bucket is the transport peer, or the address our
 * own trusted proxies wrote (TRUST_PROXY_HOPS), never an address a client names itself.
 */
export interface AuthFailureLimiter {
  readonly limitPerMinute: number;
  /** The refusal still in force for this request's client, from memory only (its bucket is computed only while some client is blocked). */
  refusal(services: Services, c: Context): PreAuthDecision | undefined;
  /** Counts one failed authentication; a denied decision blocks the client until its window resets. */
  fail(bucket: string): Promise<PreAuthDecision>;
}

export interface AuthFailureLimiterOptions {
  redis?: Redis;
  log: Logger;
  limitPerMinute?: number;
  prefix?: string;
}

// 20 failures a minute per client: a person mistyping a key or a script with an expired token
// fails a handful of times, while a guesser of a 190-bit secret gets nowhere either way; the budget
// only bounds the verification work (HMAC, database look-up, ES256) a client can make us do.
const DEFAULT_FAILURES_PER_MINUTE = 20;
// As many blocked clients as the pre-auth limiter keeps buckets; forgetting one only costs it a
// store call on its next failure.
const MAX_BLOCKED = 100_000;

export function createAuthFailureLimiter(options: AuthFailureLimiterOptions): AuthFailureLimiter {
  const limitPerMinute = options.limitPerMinute ?? DEFAULT_FAILURES_PER_MINUTE;
  const counter = createPreAuthLimiter({
    log: options.log,
    limitPerMinute,
    prefix: options.prefix ?? 'authfail',
    ...(options.redis === undefined ? {} : { redis: options.redis }),
  });
  const blocked = new BoundedMap<string, PreAuthDecision>(MAX_BLOCKED);

  return {
    limitPerMinute,
    refusal: (services, c) => {
      if (blocked.size === 0) return undefined;
      const id = requestBucket(services, c);
      const decision = blocked.get(id);
      if (decision === undefined) return undefined;
      if (decision.resetAtMs > services.clock.now()) return decision;
      blocked.delete(id);
      return undefined;
    },
    fail: async (bucket) => {
      const decision = await counter.check(bucket, 'auth-failure');
      if (!decision.allowed) blocked.set(bucket, decision);
      return decision;
    },
  };
}

/** The client bucket of a request as the limiters see it (the same address the pre-auth limit uses). */
export function requestBucket(services: Services, c: Context): string {
  const address = services.clientAddress === undefined ? socketAddress(c) : services.clientAddress(c.req.raw);
  return clientBucket({
    socketAddress: address,
    forwardedFor: c.req.header('x-forwarded-for'),
    trustProxyHops: services.config.trustProxyHops,
  });
}
