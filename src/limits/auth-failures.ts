import type { Context } from 'hono';
import { clientBucket, socketAddress } from '../http/client-ip.js';
import type { Logger } from '../observability/logger.js';
import type { Services } from '../services.js';
import { BoundedMap, createPreAuthLimiter, type PreAuthDecision, type SharedWindows } from './preauth.js';

/**
 * Failed authentications per client (bucket of src/http/client-ip.ts, never an address the client
 * names): API keys and tRPC bearers that do not verify count, successes and requests without
 * credentials do not. Past the budget the client gets 429 except for credentials that cost no
 * guessing and no database work — a key this instance already verified, a signed token — so valid
 * callers behind a shared address keep working. Only a failure costs a store call; a blocked client
 * is refused from this process's memory until its window resets.
 */
export interface AuthFailureLimiter {
  readonly limitPerMinute: number;
  /** The refusal still in force for this request's client, from memory only (its bucket is computed only while some client is blocked). */
  refusal(services: Services, c: Context): PreAuthDecision | undefined;
  /** Counts one failed authentication; a denied decision blocks the client until its window resets. */
  fail(bucket: string): Promise<PreAuthDecision>;
}

export interface AuthFailureLimiterOptions {
  shared?: SharedWindows;
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
    ...(options.shared === undefined ? {} : { shared: options.shared }),
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
