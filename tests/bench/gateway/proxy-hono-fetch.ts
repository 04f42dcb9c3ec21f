/**
 * Target B2 of bench:gateway: what a naive Hono gateway costs — Hono on @hono/node-server, the
 * request forwarded with the global `fetch` (undici) and the upstream's body streamed back as it
 * comes. No auth, no limits, no metering. UPSTREAM_URL is the upstream's origin; prints
 * `{"port":n}` once listening.
 */
import { serve } from '@hono/node-server';
import { Hono } from 'hono';

const upstream = (process.env.UPSTREAM_URL ?? 'http://127.0.0.1:1').replace(/\/+$/, '');

const app = new Hono();
app.post('/v1/chat/completions', async (c) => {
  const answer = await fetch(`${upstream}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': c.req.header('content-type') ?? 'application/json' },
    body: await c.req.text(),
  });
  return new Response(answer.body, {
    status: answer.status,
    headers: { 'content-type': answer.headers.get('content-type') ?? 'application/json' },
  });
});

const server = serve(
  { fetch: app.fetch, port: Number(process.env.PORT ?? 0), hostname: '127.0.0.1' },
  (info) => console.log(JSON.stringify({ port: info.port })),
);
if ('keepAliveTimeout' in server) server.keepAliveTimeout = 60_000;
