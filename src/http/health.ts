import { Hono } from 'hono';
import type { SigningKeys } from '../signing/keys.js';
import { scriptInfo } from '../store/typed-store.js';
import { CONTRACT_VERSION, VERSION } from '../version.js';
import type { AppEnv } from './context.js';

/**
 * GET /health — liveness: version, contract version, the Lua scripts (name, version, SHA-1) this
 * build calls and, once started, the active signing key's age (with a warning past
 * SIGNING_KEY_MAX_AGE_DAYS). Answers from memory only: it never touches the store or the
 * database, so an orchestrator does not restart a healthy process because a dependency is down.
 */
export function healthRoute(signing?: SigningKeys): Hono<AppEnv> {
  return new Hono<AppEnv>().get('/health', (c) =>
    c.json({
      status: 'ok',
      version: VERSION,
      contractVersion: CONTRACT_VERSION,
      scripts: scriptInfo(),
      ...(signing === undefined ? {} : { signing: signing.health() }),
    }),
  );
}
