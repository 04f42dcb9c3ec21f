import { Hono } from 'hono';
import type { Services } from '../services.js';
import { type KeyEnv, requireApiKey } from './api-key-auth.js';

/**
 * GET /api/v1/key — what the presented API key is: its id, tenant and limits. Lets a caller check
 * a key without spending anything (and is the simplest authenticated route).
 */
export function keyInfoRoute(services: Services): Hono<KeyEnv> {
  return new Hono<KeyEnv>().get('/api/v1/key', requireApiKey(services), (c) => {
    const key = c.get('apiKey');
    return c.json({
      id: key.id,
      prefix: key.prefix,
      tenantId: key.tenantId,
      sandbox: key.sandbox,
      scopes: key.scopes,
      rpmLimit: key.rpmLimit,
      tpdLimit: key.tpdLimit,
      monthlyCapMicro: key.monthlyCapMicro === null ? null : key.monthlyCapMicro.toString(),
    });
  });
}
