import { Hono } from 'hono';
import { CONTRACT_VERSION, VERSION } from '../version.js';
import type { AppEnv } from './context.js';

/**
 * GET /health — liveness. Answers from memory only: it never touches the store or the database,
 * so an orchestrator does not restart a healthy process because a dependency is down.
 */
export function healthRoute(): Hono<AppEnv> {
  return new Hono<AppEnv>().get('/health', (c) =>
    c.json({ status: 'ok', version: VERSION, contractVersion: CONTRACT_VERSION }),
  );
}
