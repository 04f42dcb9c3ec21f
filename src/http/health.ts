import { Hono } from 'hono';
import { scriptInfo } from '../store/store.js';
import { CONTRACT_VERSION, VERSION } from '../version.js';
import type { AppEnv } from './context.js';

/**
 * GET /health — liveness: version, contract version and the Lua scripts (name, version, SHA-1)
 * this build calls. Answers from memory only: it never touches the store or the database,
 * so an orchestrator does not restart a healthy process because a dependency is down.
 */
export function healthRoute(): Hono<AppEnv> {
  return new Hono<AppEnv>().get('/health', (c) =>
    c.json({ status: 'ok', version: VERSION, contractVersion: CONTRACT_VERSION, scripts: scriptInfo() }),
  );
}
