import type { Context, Hono, MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { HTTPException } from 'hono/http-exception';
import { TrieRouter } from 'hono/router/trie-router';
import { AppError, type ErrorCode } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import { type AppEnv, errorResponse } from './context.js';

/** How an app renders an error: the one shape by default; the OpenAI surface keeps OpenAI's. */
export type ErrorRenderer = (c: Context<AppEnv>, error: AppError) => Response;

/**
 * The middleware every app shares, in the order a request meets it: request id, access log and
 * security headers, body limit; plus the 404/405 and error handlers that keep every failure in
 * the app's error shape and every stack trace in the log.
 */
export function applyCommonMiddleware(
  app: Hono<AppEnv>,
  options: { log: Logger; maxBodyBytes: number; renderError?: ErrorRenderer },
): void {
  const render = options.renderError ?? errorResponse;
  app.use(perRequest(options.log));
  // Before any route, so an oversized body is refused before authentication or parsing.
  const tooLarge = (c: Context<AppEnv>) =>
    render(
      c,
      new AppError('payload_too_large', `Request body exceeds ${options.maxBodyBytes} bytes`, {
        maxBytes: options.maxBodyBytes,
      }),
    );
  const countingLimit = bodyLimit({ maxSize: options.maxBodyBytes, onError: tooLarge });
  app.use((c, next) => {
    // The common case answered from the headers: hono's bodyLimit first reads `request.body`, which
    // makes @hono/node-server build a whole web Request, a cost every request would pay.
    if (c.req.method === 'GET' || c.req.method === 'HEAD') return next();
    const length = c.req.header('content-length');
    if (length !== undefined && c.req.header('transfer-encoding') === undefined) {
      return Number(length) > options.maxBodyBytes ? Promise.resolve(tooLarge(c)) : next();
    }
    // No length (chunked): count the bytes as they come.
    return countingLimit(c, next);
  });

  // No handler for this method: 405 with `Allow` when the path has handlers for other methods.
  const allowedMethods = routeMethods(app);
  app.notFound((c) => {
    const path = truncate(c.req.path);
    const allowed = allowedMethods(c.req.path);
    if (allowed.length === 0)
      return render(c, new AppError('not_found', `No route for ${c.req.method} ${path}`));
    c.header('Allow', allowed.join(', '));
    return render(c, new AppError('method_not_allowed', `${c.req.method} is not allowed on ${path}`));
  });

  app.onError((thrown, c) => {
    if (thrown instanceof AppError) return render(c, thrown);
    if (thrown instanceof HTTPException && thrown.status < 500) {
      return render(c, new AppError(codeForStatus(thrown.status), thrown.message || 'Bad request'));
    }
    (c.get('log') ?? options.log).error({ err: thrown }, 'unhandled error');
    return render(c, new AppError('internal_error', 'Internal error'));
  });
}

const METHOD_ORDER = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'];

/**
 * The methods the app's handlers answer on a path (middleware, registered for ALL methods, does
 * not count); HEAD wherever GET is, as Hono serves it. Rebuilt when routes are added.
 */
function routeMethods(app: Hono<AppEnv>): (path: string) => string[] {
  let router = new TrieRouter<string>();
  let routeCount = -1;
  return (path) => {
    if (routeCount !== app.routes.length) {
      router = new TrieRouter<string>();
      for (const route of app.routes) if (route.method !== 'ALL') router.add('ALL', route.path, route.method);
      routeCount = app.routes.length;
    }
    const methods = new Set(router.match('ALL', path)[0].map(([method]) => method));
    if (methods.has('GET')) methods.add('HEAD');
    return [...methods].sort((a, b) => rank(a) - rank(b));
  };
}

function rank(method: string): number {
  const index = METHOD_ORDER.indexOf(method);
  return index === -1 ? METHOD_ORDER.length : index;
}

// 1 s: what lies behind a 503 (a store timeout, a failed upstream, an instance still starting) is
// usually brief, and a retry that comes too soon is refused cheaply (an open breaker answers at once).
const RETRY_AFTER_SECONDS_ON_503 = 1;

/**
 * The security headers hono's `secureHeaders` sets with these options — HSTS for two years,
 * nosniff, DENY, no-referrer, and a CSP under which nothing may load, frame or submit anything (an
 * API serves no documents) — written out once (tests/integration/app.happy.test.ts checks them).
 */
export const SECURITY_HEADERS: readonly (readonly [string, string])[] = [
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

const SECURITY_HEADER_LIST: readonly string[] = SECURITY_HEADERS.flat();

/**
 * The headers `perRequest` puts on every response, as a flat [name, value, …] list Node's
 * `writeHead` takes, for a route that writes its Node response itself (src/http/node-reply.ts)
 * and so sends them with its head. A fresh array the caller may append to.
 */
export function commonHeaderList(requestId: string): string[] {
  return ['X-Request-Id', requestId, ...SECURITY_HEADER_LIST];
}

// A well-formed incoming X-Request-Id is kept, so a caller can correlate; anything else is replaced.
const REQUEST_ID = /^[\w=-]{1,128}$/;

/**
 * Request id, access log and security headers in one middleware, one layer per request rather than
 * hono's requestId and secureHeaders plus a log. Headers go on after the handler, since one that
 * returns a Response of its own (tRPC) drops headers set before it.
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
    // A route that wrote its Node response itself sent these headers with its head.
    const sent = c.get('sentStatus');
    if (sent === undefined) {
      const headers = c.res.headers;
      headers.set('X-Request-Id', id);
      for (const [name, value] of SECURITY_HEADERS) headers.set(name, value);
      // Every 503 (store or upstream unavailable, not ready, tRPC's too) says when to come back.
      if (c.res.status === 503 && !headers.has('retry-after')) {
        headers.set('Retry-After', String(RETRY_AFTER_SECONDS_ON_503));
      }
    }
    // At LOG_LEVEL=warn (production's usual), not even the line's fields are built.
    if (!log.isLevelEnabled('info')) return;
    log.info(
      {
        method: c.req.method,
        path: c.req.path,
        status: sent ?? c.res.status,
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
    case 415:
      return 'unsupported_media_type';
    case 429:
      return 'rate_limited';
    default:
      return 'invalid_request';
  }
}

function truncate(path: string): string {
  return path.length > 200 ? `${path.slice(0, 200)}…` : path;
}
