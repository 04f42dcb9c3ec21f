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
  return {
    ...(limit.retryAfterMs === undefined
      ? {}
      : { 'Retry-After': String(Math.max(1, Math.ceil(limit.retryAfterMs / 1000))) }),
    'RateLimit-Limit': String(limit.limit),
    'RateLimit-Remaining': String(limit.remaining),
    'RateLimit-Reset': reset,
    'X-RateLimit-Limit': String(limit.limit),
    'X-RateLimit-Remaining': String(limit.remaining),
    'X-RateLimit-Reset': reset,
  };
}
