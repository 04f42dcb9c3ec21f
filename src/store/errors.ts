import { AppError } from '../errors.js';

/**
 * The store did not answer (down, unreachable, or slower than its command timeout). Callers fail
 * closed with 503 `store_unavailable`; it is never reported as a budget or rate-limit denial.
 * The operation may still have been applied (a timed-out command can reach Redis later): every
 * script is idempotent by its ids, and unsettled reservations are reaped.
 */
export class StoreUnavailable extends AppError {
  constructor(options: { cause?: unknown } = {}) {
    super('store_unavailable', 'The store is unavailable');
    if (options.cause !== undefined) this.cause = options.cause;
  }
}

/** A fencing token would pass 2^53 - 1 and could no longer be compared exactly. */
export class FencingOverflow extends Error {
  override readonly name = 'FencingOverflow';
}

/**
 * Redis error replies that mean "not now" rather than "wrong": a script still running (BUSY), a
 * replica or loading node, a failover, a cluster in flux, memory or persistence trouble, a
 * provider's rate limit. Callers treat them as the store being unavailable (fail closed, 503).
 */
const OUTAGE_REPLY =
  /^(BUSY|LOADING|READONLY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|MOVED|ASK|OOM|MISCONF|NOREPLICAS)\b|max requests limit exceeded/i;

export function isOutageReply(message: string): boolean {
  return OUTAGE_REPLY.test(message);
}
