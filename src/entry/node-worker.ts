import { pathToFileURL } from 'node:url';
import { isEmbedded, warnShortReservationTtl } from '../config.js';
import { gatewayJobs } from '../jobs/index.js';
import { JobRunner } from '../jobs/node-runner.js';
import { createLogger } from '../observability/logger.js';
import type { Services } from '../services.js';
import { loadConfigOrExit } from './env.js';
import { buildNodeServices } from './node.js';

/**
 * `spicegate worker`: the background jobs alone (src/jobs), without an HTTP server, until SIGTERM
 * or SIGINT; then running jobs end at their next step, their leases are given back, and the store
 * and database are closed. Serving instances then run with JOBS=off (or not: singleton jobs hold a
 * lease, so only one instance runs each at a time either way).
 */
export async function main(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const config = loadConfigOrExit(env);
  const log = createLogger({ level: config.logLevel });
  // The embedded store lives in the serving process and PGlite's files belong to it: a separate
  // worker would reap a store of its own and could corrupt the database.
  if (isEmbedded(config) || (config.redisUrl === undefined && config.upstash === undefined)) {
    process.stderr.write(
      'spicegate worker needs DATABASE_URL and a shared store (REDIS_URL or UPSTASH_REDIS_REST_URL); on embedded defaults the jobs run inside serve\n',
    );
    process.exit(2);
  }
  warnShortReservationTtl(config, log);

  let services: Services;
  try {
    services = await buildNodeServices(config, log, { background: 'none' });
  } catch (error) {
    log.fatal({ err: error }, 'start-up failed');
    process.exit(1);
  }
  const runner = new JobRunner(services, gatewayJobs(config));
  runner.start();
  log.info({ holder: runner.holder, store: services.engines.store }, 'spicegate worker ready');

  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    log.info({ reason: signal }, 'shutting down: stopping the jobs');
    void (async () => {
      let code = 0;
      await runner.stop().catch((error: unknown) => {
        log.error({ err: error }, 'background jobs did not stop cleanly');
        code = 1;
      });
      await services.stop().catch((error: unknown) => {
        log.error({ err: error }, 'closing the store or the database failed');
        code = 1;
      });
      log.info('shutdown complete');
      process.exit(code);
    })();
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void main();
}
