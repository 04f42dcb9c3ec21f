import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKey } from '../../src/keys/keys.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';
import { events, infer } from '../support/sse.js';

/**
 * An upstream that accepts the connection and never sends a byte: the first-byte timeout
 * (UPSTREAM_FIRST_BYTE_TIMEOUT_MS, 200 ms here; the total timeout stays at its 60 s default) ends
 * the wait, answers 503, releases the reservation and counts towards the breaker.
 */
let upstream: Server;
const sockets: Socket[] = [];
let harness: Harness;

beforeAll(async () => {
  // A raw TCP server: it reads the request and never writes anything back.
  upstream = createServer((socket) => {
    sockets.push(socket);
    socket.resume();
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  const { port } = upstream.address() as AddressInfo;
  harness = await createHarness({
    config: {
      upstream: 'openai',
      upstreamUrl: `http://127.0.0.1:${port}/v1`,
      upstreamFirstByteTimeoutMs: 200,
    },
    upstreamOverrides: { retryDelaysMs: [5, 5] },
  });
});
afterAll(async () => {
  await harness.close();
  for (const socket of sockets) socket.destroy();
  await new Promise<void>((resolve) => upstream.close(() => resolve()));
});

describe('an upstream that accepts the connection and never answers', () => {
  it('gets 503 upstream_unavailable at the first-byte timeout, the reservation back, and opens the breaker after 3', async () => {
    const tenant = await createTenant(harness.services, { name: 'Hung', tier: 4 });
    await harness.services.store.credit({ tenantId: tenant.id, grantId: 'g', amountMicro: 1_000_000n });
    const { key } = await createKey(harness.services, tenant.id, { name: 'k' });

    for (let i = 0; i < 3; i += 1) {
      expect(harness.services.upstream.status().breaker).toBe('closed');
      const response = await harness.request('/api/v1/inference', {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: 'anyone there?', max_tokens: 8 }),
      });
      expect(response.status).toBe(503);
      const body = (await response.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe('upstream_unavailable');
      expect(body.error.message).toMatch(/no response within 200 ms/);
      expect(await harness.services.store.snapshot(tenant.id)).toMatchObject({
        committedMicro: 0n,
        reservedMicro: 0n,
      });
    }
    // The first-byte timeout spans the retries: a hung attempt spends it, so it is not retried.
    expect(sockets).toHaveLength(3);
    expect(harness.services.upstream.status().breaker).toBe('open');
  });
});

describe('an upstream that answers at once, then streams past the first-byte timeout', () => {
  // Answers at once, sends a token, then waits `pauseMs` before the rest (or forever).
  let slow: HttpServer;
  let slowUrl: string;
  let pauseMs = 0;
  const chunk = (content: string) => `data: {"choices":[{"index":0,"delta":{"content":"${content}"}}]}\n\n`;
  beforeAll(async () => {
    slow = createHttpServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(chunk('early'));
      if (!Number.isFinite(pauseMs)) return;
      setTimeout(() => {
        res.end(`${chunk(' late')}data: [DONE]\n\n`);
      }, pauseMs);
    });
    await new Promise<void>((resolve) => slow.listen(0, '127.0.0.1', resolve));
    slowUrl = `http://127.0.0.1:${(slow.address() as AddressInfo).port}/v1`;
  });
  afterAll(async () => {
    slow.closeAllConnections();
    await new Promise<void>((resolve) => slow.close(() => resolve()));
  });

  async function stream(config: { upstreamFirstByteTimeoutMs: number; upstreamTimeoutMs: number }) {
    const gateway = await createHarness({ config: { upstream: 'openai', upstreamUrl: slowUrl, ...config } });
    try {
      const tenant = await createTenant(gateway.services, { name: 'Slow', tier: 4 });
      await gateway.services.store.credit({ tenantId: tenant.id, grantId: 'g', amountMicro: 1_000_000n });
      const { key } = await createKey(gateway.services, tenant.id, { name: 'k' });
      const response = await infer(gateway, key, { prompt: 'take your time', max_tokens: 8 });
      return events(await response.text());
    } finally {
      await gateway.close();
    }
  }

  it('is not cut by the first-byte timeout once it has answered', async () => {
    pauseMs = 400;
    const received = await stream({ upstreamFirstByteTimeoutMs: 200, upstreamTimeoutMs: 60_000 });
    expect(received.map((event) => event.type)).toEqual(['token', 'token', 'done']);
  });

  it('is cut by the total timeout, counted from the start, with an error event', async () => {
    pauseMs = Number.POSITIVE_INFINITY;
    const received = await stream({ upstreamFirstByteTimeoutMs: 200, upstreamTimeoutMs: 600 });
    expect(received.map((event) => event.type)).toEqual(['token', 'error']);
  });
});
