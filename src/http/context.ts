import type { ServerResponse } from 'node:http';
import type { Context } from 'hono';
import type { RequestIdVariables } from 'hono/request-id';
import { Cancellation } from '../cancellation.js';
import { AppError, asAppError, errorBody } from '../errors.js';
import type { Logger } from '../observability/logger.js';

/** What every raw route can read from Hono's context. */
export type AppEnv = {
  Variables: RequestIdVariables & {
    log: Logger;
    /** Set when the route wrote its Node response itself: the status it sent (node-reply.ts). */
    sentStatus: number | undefined;
  };
};

/** The one way a raw route answers with an error (DESIGN.md §4 shape). */
export function errorResponse<E extends AppEnv>(c: Context<E>, thrown: unknown): Response {
  const error = asAppError(thrown);
  const requestId = (c as unknown as Context<AppEnv>).get('requestId');
  return c.json(errorBody(error, requestId), error.status);
}

export { AppError };

/**
 * The Node response behind a request @hono/node-server serves (its env's `outgoing`); undefined
 * elsewhere (Workers, `app.request`). A route may write it itself (src/http/node-reply.ts).
 */
export function nodeOutgoing(c: Context): ServerResponse | undefined {
  const outgoing = (c.env as { outgoing?: Partial<ServerResponse> } | undefined)?.outgoing;
  return typeof outgoing?.writeHead === 'function' && 'writableFinished' in outgoing
    ? (outgoing as ServerResponse)
    : undefined;
}

/**
 * Aborted when the caller goes away, or when the route aborts it (a stream's `onAbort`): the one
 * signal the upstream call and the relay watch. On Node the response closing before it finished
 * says the caller left — what the adapter's `request.signal` reports, without the AbortController
 * it creates per request to do so (see Cancellation); elsewhere (Workers, `app.request`) the
 * request's own signal.
 */
export function clientSignal(c: Context): Cancellation {
  const gone = new Cancellation();
  const outgoing = nodeOutgoing(c);
  if (outgoing !== undefined) {
    if (outgoing.destroyed && !outgoing.writableFinished) gone.abort();
    else
      outgoing.once('close', () => {
        if (!outgoing.writableFinished) gone.abort();
      });
    return gone;
  }
  const signal = c.req.raw.signal;
  if (signal.aborted) gone.abort();
  else signal.addEventListener('abort', () => gone.abort(), { once: true });
  return gone;
}
