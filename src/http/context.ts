import type { Context } from 'hono';
import type { RequestIdVariables } from 'hono/request-id';
import { AppError, asAppError, errorBody } from '../errors.js';
import type { Logger } from '../observability/logger.js';

/** What every raw route can read from Hono's context. */
export type AppEnv = {
  Variables: RequestIdVariables & { log: Logger };
};

/** The one way a raw route answers with an error (DESIGN.md §4 shape). */
export function errorResponse<E extends AppEnv>(c: Context<E>, thrown: unknown): Response {
  const error = asAppError(thrown);
  const requestId = (c as unknown as Context<AppEnv>).get('requestId');
  return c.json(errorBody(error, requestId), error.status);
}

export { AppError };

/**
 * Aborted when the caller goes away (its request signal), or when the route aborts it (a stream's
 * `onAbort`): the one signal the upstream call and the relay watch.
 */
export function clientSignal(request: Request): AbortController {
  const controller = new AbortController();
  if (request.signal.aborted) controller.abort();
  else request.signal.addEventListener('abort', () => controller.abort(), { once: true });
  return controller;
}
