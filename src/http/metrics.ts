import { Hono } from 'hono';
import { bearerToken, constantTimeEqual } from '../auth/caller.js';
import { AppError } from '../errors.js';
import type { Services } from '../services.js';
import { type AppEnv, errorResponse } from './context.js';

/**
 * GET /metrics — Prometheus text. Open unless METRICS_TOKEN is set; then that bearer token is
 * required (compared in constant time).
 */
export function metricsRoute(services: Services): Hono<AppEnv> {
  return new Hono<AppEnv>().get('/metrics', async (c) => {
    const required = services.config.metricsToken;
    if (required !== undefined) {
      const token = bearerToken(c.req.header('authorization'));
      if (token === undefined || !constantTimeEqual(token, required)) {
        return errorResponse(c, new AppError('unauthorized', 'A metrics bearer token is required'));
      }
    }
    const { registry } = services.metrics;
    return c.body(await registry.metrics(), 200, { 'content-type': registry.contentType });
  });
}
