import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createAdaptorServer } from '@hono/node-server';
import type { Hono } from 'hono';
import { createDb } from '../../db/index.js';
import type { PgliteAssets } from '../../db/pglite-assets.js';
import { bypassRowLevelSecurity } from '../../db/scope.js';
import { createApp, createNotReadyApp } from '../app.js';
import { type Config, isEmbedded, warnNotYetInEffect, warnShortReservationTtl } from '../config.js';
import { answerClientErrors } from '../http/client-error.js';
import type { AppEnv } from '../http/context.js';
import { serveJobs } from '../jobs/index.js';
import { JobRunner } from '../jobs/node-runner.js';
import { type Peppers, parsePeppers } from '../keys/peppers.js';
import { createAuthFailureLimiter } from '../limits/auth-failures.js';
import { createPaymentThrottle, createPreAuthLimiter } from '../limits/preauth.js';
import { createLogger, type Logger } from '../observability/logger.js';
import { createMetrics, type Metrics } from '../observability/metrics.js';
import { startupMs, timed } from '../observability/startup.js';
import { assembleServices, type Services } from '../services.js';
import { localSigner, parsePrivateJwks } from '../signing/signer.js';
import type { Store } from '../store/index.js';
import { memoryStore } from '../store/memory/index.js';
import { nodeHttpClient } from '../upstream/http-node.js';
import { loadConfigOrExit } from './env.js';
import { jsonKeyDir } from './key-file.js';
import { adminTokenPath, ensureDataDir, ensureSecretFile } from './secrets.js';

/**
 * The Node entry: the only place (with cli.ts) that reads the environment and picks adapters.
 * Embedded defaults: PGlite in DATA_DIR and the memory store. DATABASE_URL → postgres.js;
 * REDIS_URL → ioredis.
 */
export async function buildNodeServices(
  config: Config,
  log: Logger,
  options: {
    /** `none` for `spicegate worker`: its jobs do the work; no request path to keep warm. */
    background?: 'all' | 'none';
    /** PGlite's WASM and files, already being read (embedded defaults; db/pglite-assets.ts). */
    pglite?: Promise<PgliteAssets>;
  } = {},
): Promise<Services> {
  const embedded = isEmbedded(config);
  // DATA_DIR also holds the local signer's private keys, so it exists whatever the database.
  await ensureDataDir(config.dataDir);

  const database = await timed('database', () =>
    createDb(
      config.databaseUrl === undefined
        ? {
            dataDir: join(config.dataDir, 'pglite'),
            ...(options.pglite === undefined ? {} : { pglite: options.pglite }),
          }
        : { databaseUrl: config.databaseUrl },
    ),
  );
  try {
    await timed('migrate', () => database.migrate());
  } catch (error) {
    await database.close();
    throw error;
  }
  if (config.benchRlsBypass) {
    bypassRowLevelSecurity(database.db);
    log.warn('SPICEGATE_BENCH_RLS_BYPASS: tenant isolation by row-level security is off (benchmarks only)');
  }

  const metrics = createMetrics();
  const store = await selectStore(config, log, metrics);

  let adminToken = config.adminToken;
  if (adminToken === undefined && embedded) {
    const path = adminTokenPath(config.dataDir);
    const secret = await ensureSecretFile(path);
    adminToken = secret.value;
    log.info({ path: resolve(path), generated: secret.created }, 'bootstrap admin token file');
  }

  const signer = await timed('signer', () =>
    localSigner({
      configured: parsePrivateJwks(config.signingPrivateJwks),
      file: jsonKeyDir(join(config.dataDir, 'signing-keys')),
    }),
  );
  const peppers = await loadPeppers(config, log);
  const { preAuthRedis, shared } = await sharedWindows(config);
  const preAuth = createPreAuthLimiter({
    log,
    ...(shared === undefined ? {} : { shared }),
  });
  const authFailures = createAuthFailureLimiter({
    log,
    ...(shared === undefined ? {} : { shared }),
  });
  const http = nodeHttpClient();
  const services = assembleServices({
    config,
    upstreamOverrides: { http },
    database,
    store,
    signer,
    peppers,
    preAuth,
    authFailures,
    paymentThrottle: createPaymentThrottle({
      log,
      ...(shared === undefined ? {} : { shared }),
    }),
    log,
    metrics,
    adminToken,
    lifecycle: {
      ...(options.background === 'none' ? {} : { background: 'all' }),
      owns: {
        connections: [() => http.close?.(), () => preAuthRedis?.disconnect()],
        store: true,
        database: true,
      },
    },
  });
  try {
    await timed('services', () => services.start());
  } catch (error) {
    await services.stop().catch(() => undefined);
    throw error;
  }
  return services;
}

/**
 * API_KEY_PEPPERS, or a pepper generated once into DATA_DIR (mode 0600). Several instances must
 * share it: with a real database and no API_KEY_PEPPERS, that only works with a shared DATA_DIR.
 */
async function loadPeppers(config: Config, log: Logger): Promise<Peppers> {
  if (config.apiKeyPeppers !== undefined) return parsePeppers(config.apiKeyPeppers) as Peppers;
  const secret = await ensureSecretFile(join(config.dataDir, 'api-key-pepper'));
  if (!isEmbedded(config))
    log.warn('API_KEY_PEPPERS is not set: using a pepper from DATA_DIR, which other instances do not share');
  return parsePeppers(`1:${secret.value}`) as Peppers;
}

/**
 * REDIS_URL → ioredis; else UPSTASH_REDIS_REST_* → Upstash REST; else the embedded memory engine.
 * The Redis and Upstash clients load only when chosen: embedded defaults never pay their module
 * loading at start (docs/performance.md "Boot").
 */
async function selectStore(config: Config, log: Logger, metrics: Metrics): Promise<Store> {
  if (config.redisUrl !== undefined) {
    const { redisStore } = await import('../store/redis.js');
    return redisStore({ url: config.redisUrl, log, metrics });
  }
  if (config.upstash !== undefined) {
    const { upstashStore } = await import('../store/upstash.js');
    return upstashStore({ ...config.upstash, log, metrics });
  }
  return memoryStore({ log, metrics });
}

/**
 * With REDIS_URL, the pre-auth limiters' windows shared by every instance, on a connection of their
 * own: a pre-auth flood never queues behind admission and settlement. Without, none (in-process).
 */
async function sharedWindows(config: Config) {
  if (config.redisUrl === undefined) return { preAuthRedis: undefined, shared: undefined };
  const [{ Redis }, { redisOptions }, { redisWindows }] = await Promise.all([
    import('ioredis'),
    import('../store/redis.js'),
    import('../limits/ioredis-ratelimit-adapter.js'),
  ]);
  const preAuthRedis = new Redis(config.redisUrl, redisOptions());
  preAuthRedis.on('error', () => {}); // the store's client already logs connection errors
  return { preAuthRedis, shared: redisWindows(preAuthRedis) };
}

export interface RunningGateway {
  readonly url: string;
  readonly port: number;
  /** Resolves once the database is migrated and the full app is serving. */
  readonly ready: Promise<Services>;
  /**
   * Stops accepting connections, lets in-flight requests and streams finish (up to
   * SHUTDOWN_TIMEOUT_MS), then closes the store and the database. Resolves to the exit code:
   * 0 when everything drained, 1 when the deadline cut connections or start-up had failed.
   */
  shutdown(reason: string): Promise<number>;
}

export async function startGateway(
  config: Config,
  log: Logger,
  options: { pglite?: Promise<PgliteAssets> } = {},
): Promise<RunningGateway> {
  // Liveness answers while the database opens (PGlite's first start takes seconds); the full app
  // replaces the boot app as soon as services are built.
  let app: Hono<AppEnv> = createNotReadyApp({
    log,
    maxBodyBytes: config.maxBodyBytes,
    message: 'The gateway is starting',
    liveness: true,
  });
  // The env (the Node request and response) goes through: routes watch the response for a client
  // that leaves (http/context.ts clientSignal).
  const server = createAdaptorServer({
    fetch: (request: Request, env: unknown) => app.fetch(request, env),
  }) as Server;
  answerClientErrors(server, log);
  await listen(server, config.port, config.host);
  const { port } = server.address() as AddressInfo;
  const url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
  log.info({ url }, 'listening');
  const listeningAt = Math.round(performance.now());
  warnNotYetInEffect(config, log);
  warnShortReservationTtl(config, log);

  let built: Services | undefined;
  let jobs: JobRunner | undefined;
  let stopping: Promise<number> | undefined;
  const ready = buildNodeServices(config, log, options).then((services) => {
    built = services;
    app = createApp(services);
    // The background jobs (src/jobs): all of them, or with JOBS=off only this instance's own.
    if (stopping === undefined) {
      jobs = new JobRunner(services, serveJobs(config));
      jobs.start();
    }
    log.info(
      {
        url,
        database: services.engines.db,
        store: services.engines.store,
        jobs: config.jobs,
        startupMs: { listening: listeningAt, ...startupMs() },
      },
      'spicegate ready',
    );
    return services;
  });

  const shutdown = (reason: string): Promise<number> => {
    stopping ??= (async () => {
      log.info(
        { reason, deadlineMs: config.shutdownTimeoutMs },
        'shutting down: refusing new connections, draining',
      );
      // Jobs stop while requests drain: their leases go back, so another instance takes over.
      const jobsStopped = (jobs?.stop() ?? Promise.resolve()).catch((error: unknown) =>
        log.warn({ err: error }, 'background jobs did not stop cleanly'),
      );
      const drained = await drain(server, config.shutdownTimeoutMs);
      await jobsStopped;
      if (!drained) log.warn('shutdown deadline reached: remaining connections were closed');
      // Start-up still running (a long first migration) gets the same deadline, not more.
      const started = await Promise.race([
        ready.then(
          () => true,
          () => false,
        ),
        new Promise<false>((resolve) => setTimeout(() => resolve(false), config.shutdownTimeoutMs).unref()),
      ]);
      const closed = await (built?.stop() ?? Promise.resolve()).then(
        () => true,
        (error: unknown) => {
          log.error({ err: error }, 'closing the store or the database failed');
          return false;
        },
      );
      log.info('shutdown complete');
      return drained && started && closed ? 0 : 1;
    })();
    return stopping;
  };

  ready.catch(() => {});
  return { url, port, ready, shutdown };
}

/** Resolves true when every connection finished by itself before the deadline. */
async function drain(server: Server, deadlineMs: number): Promise<boolean> {
  const closed = new Promise<void>((resolveClosed) => server.close(() => resolveClosed()));
  // A keep-alive connection that just finished its response is idle: close it now rather than
  // waiting for its keep-alive timeout. Busy ones are left alone until their response ends.
  server.closeIdleConnections();
  const sweep = setInterval(() => server.closeIdleConnections(), 50);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<false>((resolveDeadline) => {
    timer = setTimeout(() => resolveDeadline(false), deadlineMs);
  });
  const drained = await Promise.race([closed.then(() => true as const), deadline]);
  clearInterval(sweep);
  clearTimeout(timer);
  if (!drained) {
    server.closeAllConnections();
    await closed;
  }
  return drained;
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolveListen();
    });
  });
}

/**
 * `npm start` / `spicegate serve`: run until SIGTERM or SIGINT. `options.pglite`: PGlite's assets,
 * when the caller started reading them before this module loaded (cli.ts).
 */
export async function main(
  env: NodeJS.ProcessEnv = process.env,
  options: { pglite?: Promise<PgliteAssets> } = {},
): Promise<void> {
  const config = loadConfigOrExit(env);
  const log = createLogger({ level: config.logLevel });
  let gateway: RunningGateway;
  try {
    gateway = await startGateway(config, log, options);
  } catch (error) {
    log.fatal({ err: error }, 'start-up failed');
    process.exit(1);
  }
  const onSignal = (signal: NodeJS.Signals) => {
    void gateway.shutdown(signal).then((code) => process.exit(code));
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  gateway.ready.catch(async (error: unknown) => {
    log.fatal({ err: error }, 'start-up failed');
    await gateway.shutdown('start-up failed');
    process.exit(1);
  });
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void main();
}
