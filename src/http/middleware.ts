import type { Context, Hono, MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { HTTPException } from 'hono/http-exception';
import { AppError, type ErrorCode } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import { type AppEnv, errorResponse } from './context.js';

/**
 * The middleware every app shares, in the order a request meets it: request id, access log and
 * security headers, body limit; plus the 404 and error handlers that keep every failure in the
 * one error shape and every stack trace in the log.
 */
export function applyCommonMiddleware(
  app: Hono<AppEnv>,
  options: { log: Logger; maxBodyBytes: number },
): void {
  app.use(perRequest(options.log));
  // Before any route, so an oversized body is refused before authentication or parsing.
  const tooLarge = (c: Context<AppEnv>) =>
    errorResponse(
      c,
      new AppError('payload_too_large', `Request body exceeds ${options.maxBodyBytes} bytes`, {
        maxBytes: options.maxBodyBytes,
      }),
    );
  const countingLimit = bodyLimit({ maxSize: options.maxBodyBytes, onError: tooLarge });
  app.use((c, next) => {
    // The common case answered from the headers: hono's bodyLimit first reads `request.body`, which
    // makes @hono/node-server build a whole web Request (~8 % of a request's CPU at saturation).
    if (c.req.method === 'GET' || c.req.method === 'HEAD') return next();
    const length = c.req.header('content-length');
    if (length !== undefined && c.req.header('transfer-encoding') === undefined) {
      return Number(length) > options.maxBodyBytes ? Promise.resolve(tooLarge(c)) : next();
    }
    // No length (chunked): count the bytes as they come.
    return countingLimit(c, next);
  });

  app.notFound((c) =>
    errorResponse(c, new AppError('not_found', `No route for ${c.req.method} ${truncate(c.req.path)}`)),
  );

  app.onError((thrown, c) => {
    if (thrown instanceof AppError) return errorResponse(c, thrown);
    if (thrown instanceof HTTPException && thrown.status < 500) {
      return errorResponse(c, new AppError(codeForStatus(thrown.status), thrown.message || 'Bad request'));
    }
    (c.get('log') ?? options.log).error({ err: thrown }, 'unhandled error');
    return errorResponse(c, thrown);
  });
}

/**
 * The security headers hono's `secureHeaders` sets with these options — HSTS for two years,
 * nosniff, DENY, no-referrer, and a CSP under which nothing may load, frame or submit anything (an
 * API serves no documents) — written out once (tests/integration/app.happy.test.ts checks them).
 */
const SECURITY_HEADERS: readonly (readonly [string, string])[] = [
  [
    'Content-Security-Policy',
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  ],
  ['Cross-Origin-Opener-Policy', 'same-origin'],
  ['Cross-Origin-Resource-Policy', 'same-origin'],
  ['Origin-Agent-Cluster', '?1'],
  ['Referrer-Policy', 'no-referrer'],
  ['Strict-Transport-Security', 'max-age=63072000; includeSubDomains'],
  ['X-Content-Type-Options', 'nosniff'],
  ['X-DNS-Prefetch-Control', 'off'],
  ['X-Download-Options', 'noopen'],
  ['X-Frame-Options', 'DENY'],
  ['X-Permitted-Cross-Domain-Policies', 'none'],
  ['X-XSS-Protection', '0'],
];

// A well-formed incoming X-Request-Id is kept, so a caller can correlate; anything else is replaced.
const REQUEST_ID = /^[\w=-]{1,128}$/;

/**
 * Request id, access log and security headers in one middleware (hono's requestId and
 * secureHeaders plus our log were three layers: ~10 % of a proxied request's CPU, measured).
 * Headers go on after the handler, since one that returns a Response of its own (tRPC) drops
 * headers set before it.
 */
function perRequest(root: Logger): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const startedAt = performance.now();
    const incoming = c.req.header('x-request-id');
    const id = incoming !== undefined && REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID();
    c.set('requestId', id);
    const log = root.child({ requestId: id });
    c.set('log', log);
    await next();
    const headers = c.res.headers;
    headers.set('X-Request-Id', id);
    for (const [name, value] of SECURITY_HEADERS) headers.set(name, value);
    log.info(
      {
        method: c.req.method,
        path: c.req.path,
        status: c.res.status,
        durationMs: Math.round((performance.now() - startedAt) * 10) / 10,
      },
      'request',
    );
  };
}

function codeForStatus(status: number): ErrorCode {
  switch (status) {
    case 401:
      return 'unauthorized';
    case 403:
      return 'forbidden';
    case 404:
      return 'not_found';
    case 405:
      return 'method_not_allowed';
    case 413:
      return 'payload_too_large';
    case 429:
      return 'rate_limited';
    default:
      return 'invalid_request';
  }
}

function truncate(path: string): string {
  return path.length > 200 ? `${path.slice(0, 200)}…` : path;
}
