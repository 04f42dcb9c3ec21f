import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Cancellation } from '../../src/cancellation.js';
import { createKey } from '../../src/keys/keys.js';
import { costMicro } from '../../src/pricing/pricing.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';

/**
 * A real OpenAI-compatible server on loopback, so the test sees connections: the gateway reads each
 * stream to its end and reuses the connection, and never relays more than max_tokens.
 */
let server: Server;
let connections = 0;
let requests = 0;
let resetReused = false;
const requestsOnSocket = new WeakMap<object, number>();
let harness: Harness;

beforeAll(async () => {
  server = createServer(async (request, response) => {
    // "reset" on a kept-alive connection: the upstream drops it, as one closing an idle socket
    // at the moment it is reused would.
    const reused = (requestsOnSocket.get(request.socket) ?? 0) > 0;
    requestsOnSocket.set(request.socket, (requestsOnSocket.get(request.socket) ?? 0) + 1);
    requests += 1;
    if (resetReused && reused) {
      resetReused = false;
      request.socket.destroy();
      return;
    }
    let raw = '';
    for await (const chunk of request) raw += chunk;
    const body = JSON.parse(raw) as { max_tokens: number; messages: { content: string }[] };
    // "greedy" ignores max_tokens, as a misbehaving upstream would.
    const count = body.messages[0]?.content === 'greedy' ? body.max_tokens + 100 : body.max_tokens;
    response.writeHead(200, { 'content-type': 'text/event-stream' });
    for (let i = 0; i < count; i += 1) {
      response.write(
        `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: `t${i} ` } }] })}\n\n`,
      );
    }
    response.write(
      `data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 2, completion_tokens: count } })}\n\n`,
    );
    response.end('data: [DONE]\n\n');
  });
  server.on('connection', () => {
    connections += 1;
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  harness = await createHarness({
    config: { upstream: 'openai', upstreamUrl: `http://127.0.0.1:${port}/v1` },
  });
});
afterAll(async () => {
  await harness.close();
  server.closeAllConnections();
  server.close();
});

async function caller() {
  const tenant = await createTenant(harness.services, { name: 'Keepalive', tier: 8 });
  await harness.services.store.credit({ tenantId: tenant.id, grantId: 'g', amountMicro: 1_000_000n });
  const { key } = await createKey(harness.services, tenant.id, { name: 'k', rpmLimit: 1_000 });
  return { tenantId: tenant.id, key };
}

async function complete(key: string, content: string, maxTokens: number) {
  const response = await harness.request('/v1/chat/completions', {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'cheap', messages: [{ role: 'user', content }], max_tokens: maxTokens }),
  });
  expect(response.status).toBe(200);
  return (await response.json()) as {
    choices: { message: { content: string }; finish_reason: string }[];
    usage: { prompt_tokens: number; completion_tokens: number };
  };
}

describe('the upstream connection', () => {
  it('is reused: requests that reach max_tokens read the stream to its end, usage included', async () => {
    const { key } = await caller();
    const before = connections;
    for (let i = 0; i < 5; i += 1) {
      const completion = await complete(key, `hello ${i}`, 3);
      expect(completion.choices[0]?.message.content).toBe('t0 t1 t2 ');
      // The upstream's usage chunk came after the cap, and it is the one reported.
      expect(completion.usage).toMatchObject({ prompt_tokens: 2, completion_tokens: 3 });
    }
    expect(connections - before).toBe(1);
  });

  it('an upstream that ignores max_tokens is cut at the cap: nothing more relayed, nothing more billed', async () => {
    const { tenantId, key } = await caller();
    const completion = await complete(key, 'greedy', 4);
    expect(completion.choices[0]?.message.content).toBe('t0 t1 t2 t3 ');
    expect(completion.choices[0]?.finish_reason).toBe('length');
    // Its usage report (104 tokens) is not trusted; our count is: 4 delivered + the prompt estimate.
    expect(completion.usage.completion_tokens).toBe(4);
    const snapshot = await harness.services.store.snapshot(tenantId);
    // "user: greedy" is 12 characters: 3 prompt tokens by the estimate.
    expect(snapshot.committedMicro).toBe(costMicro('cheap', 3 + 4));
  });

  it('a kept-alive connection the upstream dropped is retried at once on a fresh one, not counted as a failure', async () => {
    const { key } = await caller();
    await complete(key, 'warm', 2); // leaves a kept-alive connection in the pool
    const before = { requests, connections };
    resetReused = true;
    const completion = await complete(key, 'after reset', 2);
    expect(completion.choices[0]?.message.content).toBe('t0 t1 ');
    // The dropped attempt and the retry on a new connection; no backoff, no warning, breaker closed.
    expect(requests - before.requests).toBe(2);
    expect(connections - before.connections).toBe(1);
    expect(harness.logs.filter((line) => line.msg === 'upstream connect failed')).toEqual([]);
    expect(harness.services.upstream.status().breaker).toBe('closed');
  });
});

describe('a consumer that stops before reading any token', () => {
  it('drops the upstream connection at once (and ends the call: breaker told, timers cleared)', async () => {
    let closed = false;
    const holding = createServer((request, response) => {
      request.resume();
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.write(': the tokens never come\n\n');
      response.on('close', () => {
        closed = true;
      });
    });
    await new Promise<void>((resolve) => holding.listen(0, '127.0.0.1', resolve));
    const { port } = holding.address() as AddressInfo;
    const local = await createHarness({
      config: { upstream: 'openai', upstreamUrl: `http://127.0.0.1:${port}/v1` },
    });
    try {
      const opened = await local.services.upstream.open({
        pool: 'cheap',
        prompt: 'x',
        maxTokens: 4,
        stream: true,
        caller: { tenantId: 't', tier: 1, keyId: 'k', subject: 's', reservationId: 'r' },
        signal: new Cancellation().signal,
      });
      await opened.tokens[Symbol.asyncIterator]().return?.(undefined);
      await vi.waitFor(() => expect(closed).toBe(true), { timeout: 2_000 });
      expect(local.services.upstream.status().breaker).toBe('closed');
    } finally {
      await local.close();
      holding.closeAllConnections();
      holding.close();
    }
  });
});
