import { trpcServer } from '@hono/trpc-server';
import { Hono, type Context as HonoContext } from 'hono';
import { appRouter } from '../routers/index.js';
import { createContext, responseMeta, trpcErrorResponse } from '../routers/trpc.js';
import { AppError } from './errors.js';
import { auditExportRoute } from './http/audit-export.js';
import { type AppEnv, errorResponse } from './http/context.js';
import { cryptoWebhookRoute } from './http/crypto-webhook.js';
import { healthRoute } from './http/health.js';
import { inferenceRoute } from './http/inference.js';
import { jwksRoute } from './http/jwks.js';
import { keyInfoRoute } from './http/key-info.js';
import { metricsRoute } from './http/metrics.js';
import { applyCommonMiddleware } from './http/middleware.js';
import { openAiError, openAiRoutes } from './http/openai.js';
import { readyRoute } from './http/ready.js';
import { type PreAuthLimitOptions, type PreAuthRoute, preAuthLimit } from './limits/preauth.js';
import type { Logger } from './observability/logger.js';
import type { Services } from './services.js';

/** The whole gateway as a Hono app. Entries (Node, Workers, tests) differ only in the Services they pass. */
export function createApp(services: Services): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  applyCommonMiddleware(app, {
    log: services.log,
    maxBodyBytes: services.config.maxBodyBytes,
    // Everything under /v1/ is the OpenAI-compatible surface: its 404, 405, 413 and crashes too.
    renderError: (c, error) =>
      c.req.path.startsWith('/v1/') ? openAiError(c, error) : errorResponse(c, error),
  });

  // The per-IP pre-auth limit of one unauthenticated route (src/limits/preauth.ts).
  const limitPerIp = (route: PreAuthRoute, render?: PreAuthLimitOptions['render']) =>
    preAuthLimit(services.preAuth, {
      trustProxyHops: services.config.trustProxyHops,
      route,
      ...(render === undefined ? {} : { render }),
      ...(services.clientAddress === undefined
        ? {}
        : { address: (c: { req: { raw: Request } }) => services.clientAddress?.(c.req.raw) }),
    });

  app.route('/', healthRoute(services.signing));
  app.route('/', readyRoute(services));
  // Unauthenticated routes get per-IP limits (JWKS, the payment webhook, tRPC before its bearer).
  app.use('/.well-known/jwks.json', limitPerIp('jwks'));
  app.route('/', jwksRoute(services));
  app.use('/api/crypto/webhook', limitPerIp('crypto-webhook'));
  app.route('/', cryptoWebhookRoute(services));
  app.route('/', keyInfoRoute(services));
  app.route('/', inferenceRoute(services));
  app.route('/', openAiRoutes(services));
  app.route('/', metricsRoute(services));
  // Admin routes outside tRPC take tRPC's bearers, so they count against its per-IP limit.
  app.use('/api/v1/admin/*', limitPerIp('trpc'));
  app.route('/', auditExportRoute(services));

  // Every tRPC request counts against the per-IP pre-auth limit before tRPC parses it; a batch of
  // more than TRPC_MAX_BATCH calls is then refused (400) before the context (and so any auth) is built.
  app.use('/trpc/*', limitPerIp('trpc', trpcErrorResponse(services)));
  // GET and POST only: any other method gets the common 405 in the one error shape.
  app.on(
    ['GET', 'POST'],
    '/trpc/*',
    trpcServer({
      router: appRouter,
      maxBatchSize: services.config.trpcMaxBatch,
      responseMeta,
      // The adapter types its Hono context loosely; it is this app's context.
      createContext: (_opts, c: HonoContext<AppEnv>) =>
        createContext(services, {
          authorization: c.req.header('authorization'),
          requestId: c.get('requestId'),
          log: c.get('log'),
          http: c,
        }),
      onError: ({ error, path, ctx }) => {
        if (error.code === 'INTERNAL_SERVER_ERROR' && !(error.cause instanceof AppError)) {
          (ctx?.log ?? services.log).error({ err: error.cause ?? error, path }, 'tRPC procedure failed');
        }
      },
    }),
  );
  return app;
}

/**
 * What answers while the real app cannot: the Node entry serves it while the database opens and
 * migrates (PGlite's first start takes seconds), with liveness at once; the Workers entry serves it
 * for a bad configuration. Everything else is 503 `not_ready` (with Retry-After) in the one error shape.
 */
export function createNotReadyApp(options: {
  log: Logger;
  maxBodyBytes: number;
  message: string;
  details?: Record<string, unknown>;
  /** Serve GET /health (the process is alive, just not ready). */
  liveness: boolean;
}): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  applyCommonMiddleware(app, options);
  if (options.liveness) app.route('/', healthRoute());
  app.all('*', (c) => errorResponse(c, new AppError('not_ready', options.message, options.details)));
  return app;
}
