import { sql } from 'drizzle-orm';
import { Hono } from 'hono';
import { AppError } from '../errors.js';
import type { Services } from '../services.js';
import { type AppEnv, errorResponse } from './context.js';

// 2 s: the store already fails its ping after 500 ms; the database gets longer because a cold
// PostgreSQL connection includes a TCP and auth handshake.
const DATABASE_PING_TIMEOUT_MS = 2_000;

interface CheckResult {
  ok: boolean;
  engine: string;
  latencyMs: number;
}

/**
 * GET /ready — readiness: pings the store and the database concurrently, and reads the upstream's
 * contract status. 200 when both answer and the upstream is not incompatible; 503 `not_ready`
 * naming what failed. Failure details go to the log, not to the (public) body.
 */
export function readyRoute(services: Services): Hono<AppEnv> {
  return new Hono<AppEnv>().get('/ready', async (c) => {
    const log = c.get('log');
    const [store, database] = await Promise.all([
      check('store', services.engines.store, () => services.store.ping(), log),
      check(
        'database',
        services.engines.db,
        () => withTimeout(services.db.execute(sql`select 1`), DATABASE_PING_TIMEOUT_MS),
        log,
      ),
    ]);
    // The upstream fails readiness only when its contract is incompatible: an unreachable one is
    // the circuit breaker's business (it may be back before a load balancer would notice).
    const upstreamStatus = services.upstream.status();
    const upstream = {
      ok: upstreamStatus.contract.status !== 'incompatible',
      engine: upstreamStatus.name,
      contract: upstreamStatus.contract.status,
      breaker: upstreamStatus.breaker,
    };
    const checks = { store, database, upstream };
    const failed = Object.entries(checks)
      .filter(([, result]) => !result.ok)
      .map(([name]) => name);
    if (failed.length > 0) {
      return errorResponse(
        c,
        new AppError('not_ready', `Not ready: ${failed.join(', ')} unavailable`, { failed, checks }),
      );
    }
    return c.json({ status: 'ready', checks });
  });
}

async function check(
  name: string,
  engine: string,
  ping: () => Promise<unknown>,
  log: Services['log'],
): Promise<CheckResult> {
  const startedAt = performance.now();
  try {
    await ping();
    return { ok: true, engine, latencyMs: elapsed(startedAt) };
  } catch (error) {
    log.warn({ check: name, err: { message: (error as Error).message } }, 'readiness check failed');
    return { ok: false, engine, latencyMs: elapsed(startedAt) };
  }
}

function elapsed(startedAt: number): number {
  return Math.round((performance.now() - startedAt) * 10) / 10;
}

function withTimeout<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
