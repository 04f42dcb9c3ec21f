import type { ServerResponse } from 'node:http';
import type { Context } from 'hono';
import type { AppEnv } from './context.js';
import { commonHeaderList } from './middleware.js';

/**
 * The inference routes' answers written straight into Node's response on Node, inside their Hono
 * handlers: no web Response, Headers or ReadableStream per request or per event, which cost G
 * more CPU than the enforcement itself (docs/performance.md, issue 18). The head carries what
 * `perRequest` would add afterwards; the handler returns @hono/node-server's "already sent"
 * marker, and `perRequest` logs the status recorded here. Elsewhere (Workers, `app.request`) the
 * routes answer through Hono as before.
 */

/**
 * The head of a response the route writes itself: the common headers, the route's, then `own`
 * (three disjoint sets of names). Given to Node as one flat [name, value, …] list: the same head
 * merged into one object by spreading (20-odd properties) was promoted to the old generation at
 * almost every young-generation collection — 0.8 MB per collection at 500 req/s, a full
 * collection every ~13 s (docs/performance.md, 2026-12-03).
 */
export function writeHead<E extends AppEnv>(
  c: Context<E>,
  outgoing: ServerResponse,
  status: number,
  routeHeaders: Readonly<Record<string, string>>,
  own: Readonly<Record<string, string | number>>,
): void {
  const head = commonHeaderList((c as unknown as Context<AppEnv>).get('requestId'));
  for (const name in routeHeaders) head.push(name, routeHeaders[name] as string);
  for (const name in own) head.push(name, String(own[name]));
  outgoing.writeHead(status, head);
}

// @hono/node-server's RESPONSE_ALREADY_SENT (the adapter then writes nothing), made here so the
// Workers bundle does not carry the Node adapter. At module load: it must be a web Response, made
// before the adapter replaces the global `Response` with its own (whose head it would write).
const ALREADY_SENT = new Response(null, { headers: { 'x-hono-already-sent': 'true' } });

/** What the handler returns once it has written (or started writing) `outgoing` itself. */
export function sent<E extends AppEnv>(c: Context<E>, status: number): Response {
  (c as unknown as Context<AppEnv>).set('sentStatus', status);
  return ALREADY_SENT;
}

/** A JSON answer, as `c.json` writes it: `application/json` with its length. */
export function writeJson<E extends AppEnv>(
  c: Context<E>,
  outgoing: ServerResponse,
  status: number,
  body: unknown,
  routeHeaders: Readonly<Record<string, string>>,
): Response {
  const text = JSON.stringify(body);
  writeHead(c, outgoing, status, routeHeaders, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
  });
  outgoing.end(text);
  return sent(c, status);
}
