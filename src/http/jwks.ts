import { Hono } from 'hono';
import type { Services } from '../services.js';
import type { AppEnv } from './context.js';

/**
 * GET /.well-known/jwks.json — every published, unexpired public signing key. Served from the
 * in-process key copy, so it works while Redis (or the database) is down. Cacheable for
 * JWKS_MAX_AGE_SECONDS, with a strong ETag and 304 on If-None-Match.
 */
export function jwksRoute(services: Services): Hono<AppEnv> {
  return new Hono<AppEnv>().get('/.well-known/jwks.json', (c) => {
    const { body, etag } = services.signing.jwks();
    c.header('Cache-Control', `public, max-age=${services.config.jwksMaxAgeSeconds}`);
    c.header('ETag', etag);
    const ifNoneMatch = c.req.header('if-none-match');
    if (ifNoneMatch?.split(',').some((tag) => tag.trim() === etag)) {
      return c.body(null, 304);
    }
    return c.body(body, 200, { 'content-type': 'application/json' });
  });
}
