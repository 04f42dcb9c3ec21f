/**
 * The one way a rate limit is told in headers, whatever limited the request (admission, the
 * pre-auth limits, the failed-authentication budget): `RateLimit-*` (draft standard, reset in
 * seconds), the `X-RateLimit-*` spellings clients know, and `Retry-After` (seconds) on a denial.
 */
export function rateLimitHeaders(limit: {
  limit: number;
  remaining: number;
  resetInMs: number;
  /** Set on a denial. */
  retryAfterMs?: number;
}): Record<string, string> {
  const reset = String(Math.max(0, Math.ceil(limit.resetInMs / 1000)));
  // Built by assignment, not by spreading (docs/performance.md, 2026-12-03).
  const headers: Record<string, string> = {};
  if (limit.retryAfterMs !== undefined)
    headers['Retry-After'] = String(Math.max(1, Math.ceil(limit.retryAfterMs / 1000)));
  headers['RateLimit-Limit'] = String(limit.limit);
  headers['RateLimit-Remaining'] = String(limit.remaining);
  headers['RateLimit-Reset'] = reset;
  headers['X-RateLimit-Limit'] = String(limit.limit);
  headers['X-RateLimit-Remaining'] = String(limit.remaining);
  headers['X-RateLimit-Reset'] = reset;
  return headers;
}
