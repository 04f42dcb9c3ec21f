import type { Context, Hono, MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { HTTPException } from 'hono/http-exception';
import { requestId } from 'hono/request-id';
import { secureHeaders } from 'hono/secure-headers';
import { AppError, type ErrorCode } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import { type AppEnv, errorResponse } from './context.js';

/**
 * The middleware every app shares, in the order a request meets it: request id, access log,
 * security headers, body limit; plus the 404 and error handlers that keep every failure in the
 * one error shape and every stack trace in the log.
 */
export function applyCommonMiddleware(
  app: Hono<AppEnv>,
  options: { log: Logger; maxBodyBytes: number },
): void {
  // A well-formed incoming X-Request-Id ([A-Za-z0-9_=-], at most 128 characters) is kept, so a
  // caller can correlate; anything else is replaced by a fresh UUID.
  app.use(requestId({ limitLength: 128 }));
  app.use(accessLog(options.log));
  app.use(
    secureHeaders({
      strictTransportSecurity: 'max-age=63072000; includeSubDomains',
      xContentTypeOptions: 'nosniff',
      xFrameOptions: 'DENY',
      referrerPolicy: 'no-referrer',
      // An API serves no documents: nothing may load, frame or submit anything.
      contentSecurityPolicy: {
        defaultSrc: ["'none'"],
        frameAncestors: ["'none'"],
        baseUri: ["'none'"],
        formAction: ["'none'"],
      },
      crossOriginResourcePolicy: 'same-origin',
    }),
  );
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

function accessLog(root: Logger): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const startedAt = performance.now();
    const log = root.child({ requestId: c.get('requestId') });
    c.set('log', log);
    await next();
    // Handlers that return a Response of their own (tRPC) drop headers set before them.
    c.res.headers.set('X-Request-Id', c.get('requestId'));
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
