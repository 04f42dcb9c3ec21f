import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { spend } from '../../db/schema/index.js';
import { estimate } from '../../src/inference/estimate.js';
import { createKey } from '../../src/keys/keys.js';
import { costMicro } from '../../src/pricing/pricing.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { settleOneHeld } from '../support/engines.js';
import { createHarness, createHarnessOnOwnRedis, type Harness } from '../support/harness.js';
import type { RedisServer } from '../support/redis-server.js';
import { serve } from '../support/serve.js';
import { events, infer, readWithStoreFrozen } from '../support/sse.js';

async function setup(harness: Harness, options: { tier: number; creditMicro: bigint; rpmLimit?: number }) {
  const tenant = await createTenant(harness.services, { name: 'Infer', tier: options.tier });
  if (options.creditMicro > 0n) {
    await harness.services.store.credit({
      tenantId: tenant.id,
      grantId: 'g',
      amountMicro: options.creditMicro,
    });
  }
  const { key } = await createKey(harness.services, tenant.id, {
    name: 'k',
    ...(options.rpmLimit === undefined ? {} : { rpmLimit: options.rpmLimit }),
  });
  return { tenantId: tenant.id, key };
}

describe('POST /api/v1/inference (local model)', () => {
  let harness: Harness;
  beforeAll(async () => {
    harness = await createHarness();
  });
  afterAll(() => harness.close());

  it('streams tokens, then a done event after settlement; the balance drops by exactly cost_micro', async () => {
    const { tenantId, key } = await setup(harness, { tier: 4, creditMicro: 1_000_000n });
    const response = await infer(harness, key, { prompt: 'hello world', max_tokens: 10 });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('text/event-stream');
    expect(response.headers.get('x-pool-used')).toBe('standard');
    expect(response.headers.get('ratelimit-limit')).not.toBeNull();
    const received = events(await response.text());
    const tokens = received.filter((event) => event.type === 'token');
    expect(tokens).toHaveLength(10);
    const done = received.at(-1);
    // "hello world" is 11 characters: 3 prompt tokens; 10 completion tokens; 1 µ per token.
    expect(done).toMatchObject({
      type: 'done',
      usage: { prompt_tokens: 3, completion_tokens: 10, total_tokens: 13 },
      cost_micro: '13',
      reservation_id: expect.stringMatching(/^res_/),
    });
    expect(await harness.services.store.snapshot(tenantId)).toEqual({
      creditedMicro: 1_000_000n,
      committedMicro: 13n,
      reservedMicro: 0n,
      availableMicro: 1_000_000n - 13n,
      // The charge waits in the outbox until the spend writer drains it.
      outboxMicro: 13n,
      present: true,
    });
  });

  it('answers 402 naming the scope when the credits cannot cover the reservation', async () => {
    const { tenantId, key } = await setup(harness, { tier: 4, creditMicro: 50n });
    const response = await infer(harness, key, { prompt: 'hi', max_tokens: 100 });
    expect(response.status).toBe(402);
    expect(((await response.json()) as { error: Record<string, unknown> }).error).toMatchObject({
      code: 'budget_exceeded',
      scope: 'balance',
      remainingMicro: '50',
    });
    expect((await harness.services.store.snapshot(tenantId)).reservedMicro).toBe(0n);
  });

  it('answers 429 with remaining 0, Retry-After and the rate-limit headers', async () => {
    const { key } = await setup(harness, { tier: 4, creditMicro: 1_000_000n, rpmLimit: 1 });
    expect((await infer(harness, key, { prompt: 'one', max_tokens: 2 })).status).toBe(200);
    const limited = await infer(harness, key, { prompt: 'two', max_tokens: 2 });
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(limited.headers.get('ratelimit-remaining')).toBe('0');
    expect(limited.headers.get('x-ratelimit-limit')).toBe('1');
    expect(((await limited.json()) as { error: Record<string, unknown> }).error).toMatchObject({
      code: 'rate_limited',
      dimension: 'key_rpm',
      limit: 1,
      remaining: 0,
    });
  });

  it('routes a pool the tier may not use to the best allowed one', async () => {
    const { key } = await setup(harness, { tier: 1, creditMicro: 1_000_000n });
    const response = await infer(harness, key, { prompt: 'route me', max_tokens: 2, pool: 'flagship' });
    expect(response.headers.get('x-pool-used')).toBe('standard');
    await response.text();
  });

  it.each([
    ['no prompt', { max_tokens: 5 }],
    ['both prompt and messages', { prompt: 'a', messages: [{ role: 'user', content: 'b' }] }],
    ['max_tokens 0', { prompt: 'a', max_tokens: 0 }],
    ['a bad user id', { prompt: 'a', user: 'no spaces allowed' }],
  ])('answers 400 for %s, reserving nothing', async (_, body) => {
    const { tenantId, key } = await setup(harness, { tier: 4, creditMicro: 1_000n });
    const response = await infer(harness, key, body);
    expect(response.status).toBe(400);
    expect((await harness.services.store.snapshot(tenantId)).reservedMicro).toBe(0n);
  });

  it('answers 401 without a valid key', async () => {
    expect(
      (await infer(harness, 'sg_live_AAAAAAAAAAAA_00000000000000000000000000000000', { prompt: 'a' })).status,
    ).toBe(401);
  });
});

/** POST /api/v1/inference over a real socket (node:http), for Node's own disconnect path. */
function socketInference(url: string, key: string, body: object) {
  const text = JSON.stringify(body);
  const client = httpRequest(`${url}/api/v1/inference`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${key}`,
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(text)),
    },
  });
  client.on('error', () => {});
  client.end(text);
  return client;
}

/**
 * An OpenAI-compatible upstream that streams exactly `tokens` chunks and then holds the stream
 * open, so a test knows exactly what the gateway relayed before its client left.
 */
async function holdingUpstream(tokens: number) {
  let closed = false;
  const server = createServer((req, res) => {
    req.resume();
    res.on('close', () => {
      closed = true;
    });
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    for (let i = 0; i < tokens; i++) {
      res.write(`data: {"choices":[{"index":0,"delta":{"content":"t${i} "}}]}\n\n`);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    /** The gateway dropped its upstream call. */
    closed: () => closed,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

describe('a client that disconnects mid-stream', () => {
  const PROMPT = 'stream then leave';
  const DELIVERED = 3;
  let upstream: Awaited<ReturnType<typeof holdingUpstream>>;
  let harness: Harness;
  beforeAll(async () => {
    upstream = await holdingUpstream(DELIVERED);
    harness = await createHarness({ config: { upstream: 'openai', upstreamUrl: upstream.url } });
  });
  afterAll(async () => {
    await harness.close();
    upstream.close();
  });

  /** The prompt's reserved tokens plus the tokens relayed, at the tier-4 default pool's price. */
  function exactBill(): bigint {
    const { prices } = harness.services.config;
    return costMicro('standard', estimate('standard', PROMPT, 32, prices).promptTokens + DELIVERED, prices);
  }

  async function settledAfterLeaving(tenantId: string) {
    await vi.waitFor(() => expect(upstream.closed()).toBe(true), { timeout: 3_000 });
    await vi.waitFor(async () =>
      expect((await harness.services.store.snapshot(tenantId)).reservedMicro).toBe(0n),
    );
    return harness.services.store.snapshot(tenantId);
  }

  it('is billed exactly the prompt and the tokens delivered; the rest is released', async () => {
    const { tenantId, key } = await setup(harness, { tier: 4, creditMicro: 1_000_000n });
    const controller = new AbortController();
    const response = await infer(harness, key, { prompt: PROMPT, max_tokens: 32 }, controller.signal);
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    let received = '';
    while ((received.match(/"type":"token"/g) ?? []).length < DELIVERED) {
      const { value } = await reader.read();
      received += new TextDecoder().decode(value);
    }
    controller.abort();
    await reader.cancel().catch(() => undefined);

    const snapshot = await settledAfterLeaving(tenantId);
    expect(snapshot.committedMicro).toBe(exactBill());
  });

  it('over a real socket (Node reads the response closing early): billed exactly the same', async () => {
    const { tenantId, key } = await setup(harness, { tier: 4, creditMicro: 1_000_000n });
    const served = await serve(harness.app);
    try {
      let received = '';
      const gotTokens = new Promise<void>((resolve) => {
        const client = socketInference(served.url, key, { prompt: PROMPT, max_tokens: 32 });
        client.on('response', (response) => {
          response.on('error', () => {});
          response.setEncoding('utf8').on('data', (chunk: string) => {
            received += chunk;
            if ((received.match(/"type":"token"/g) ?? []).length >= DELIVERED) {
              // The caller hangs up mid-stream: the socket goes, nothing more is read.
              client.destroy();
              resolve();
            }
          });
        });
      });
      await gotTokens;
      const snapshot = await settledAfterLeaving(tenantId);
      expect(snapshot.committedMicro).toBe(exactBill());
    } finally {
      await served.close();
    }
  });
});

describe('a client that leaves before the upstream answers (over a real socket, as on Node)', () => {
  it('aborts the upstream call and releases the whole reservation', async () => {
    // An OpenAI-compatible upstream that takes the request and never answers.
    let upstreamCalled: () => void = () => {};
    const called = new Promise<void>((resolve) => {
      upstreamCalled = resolve;
    });
    let upstreamClosed = false;
    const upstream = createServer((req, res) => {
      req.resume();
      res.on('close', () => {
        upstreamClosed = true;
      });
      upstreamCalled();
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    const { port } = upstream.address() as AddressInfo;
    const harness = await createHarness({
      config: { upstream: 'openai', upstreamUrl: `http://127.0.0.1:${port}/v1` },
    });
    const served = await serve(harness.app);
    try {
      const { tenantId, key } = await setup(harness, { tier: 4, creditMicro: 1_000_000n });
      const client = socketInference(served.url, key, { prompt: 'wait for me', max_tokens: 8 });
      await called;
      expect((await harness.services.store.snapshot(tenantId)).reservedMicro).toBeGreaterThan(0n);
      // The caller hangs up while the gateway still waits for the upstream's first byte: nothing
      // has been written to it, so only the Node response closing early can say it left.
      client.destroy();
      await vi.waitFor(() => expect(upstreamClosed).toBe(true), { timeout: 3_000 });
      await vi.waitFor(async () => {
        const snapshot = await harness.services.store.snapshot(tenantId);
        expect(snapshot.reservedMicro).toBe(0n);
        expect(snapshot.committedMicro).toBe(0n);
      });
    } finally {
      await served.close();
      await harness.close();
      upstream.closeAllConnections();
      upstream.close();
    }
  });
});

describe('spend rows', () => {
  let harness: Harness;
  beforeAll(async () => {
    harness = await createHarness();
  });
  afterAll(() => harness.close());

  it('one settled row per request, with the cost of the done event, written off the request path', async () => {
    const { tenantId, key } = await setup(harness, { tier: 4, creditMicro: 1_000_000n });
    const done = events(await (await infer(harness, key, { prompt: 'spend me', max_tokens: 4 })).text()).at(
      -1,
    );
    await harness.services.spend.flush();
    await harness.services.spend.flush();
    const rows = await harness.db.select().from(spend).where(eq(spend.tenantId, tenantId));
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      reservationId: done?.reservation_id,
      costMicro: BigInt(done?.cost_micro ?? -1),
      settled: true,
      promptTokens: 2,
      completionTokens: 4,
    });
  });

  it('a full batch of settlements is written at once, without waiting for the timer', async () => {
    // The harness starts no timers: only the batch size can have written these.
    const { tenantId } = await setup(harness, { tier: 4, creditMicro: 1_000_000n });
    for (let i = 0; i < 64; i += 1) {
      const { row, outboxEntryId } = await settleOneHeld(harness.services.store, tenantId, {
        actualCostMicro: 2n,
      });
      harness.services.spend.settled(row, outboxEntryId);
    }
    await expect
      .poll(async () => (await harness.db.select().from(spend).where(eq(spend.tenantId, tenantId))).length)
      .toBe(64);
  });
});

describe('the store failing at finalize', () => {
  let harness: Harness & { redis: RedisServer };
  beforeAll(async () => {
    harness = await createHarnessOnOwnRedis({ config: { localModelTokens: 20, localModelDelayMs: 50 } });
  });
  afterAll(() => harness.close());

  it('a stream delivered in full ends with done, settlement pending; the job charges it exactly once', async () => {
    const { tenantId, key } = await setup(harness, { tier: 4, creditMicro: 1_000_000n });
    const response = await infer(harness, key, { prompt: 'slow and unlucky', max_tokens: 20 });
    expect(response.status).toBe(200);
    // The reservation is made; freeze Redis while tokens are still flowing.
    const received = events(await readWithStoreFrozen(harness, response));
    expect(received.filter((event) => event.type === 'token')).toHaveLength(20);
    // Every token arrived, so the caller has nothing to retry: done, with the charge to come.
    const done = received.at(-1);
    expect(done).toEqual({
      type: 'done',
      usage: { prompt_tokens: 4, completion_tokens: 20, total_tokens: 24 },
      cost_micro: '24',
      reservation_id: expect.stringMatching(/^res_/),
      settlement: 'pending',
    });
    const [row] = await harness.db.select().from(spend).where(eq(spend.tenantId, tenantId));
    expect(row).toMatchObject({
      reservationId: done?.reservation_id,
      settled: false,
      promptTokens: 4,
      completionTokens: 20,
      costMicro: 24n,
    });

    expect(await harness.services.spend.settleUnsettled()).toBe(1);
    const [settled] = await harness.db.select().from(spend).where(eq(spend.tenantId, tenantId));
    expect(settled).toMatchObject({ settled: true, costMicro: 24n });
    expect(await harness.services.store.snapshot(tenantId)).toMatchObject({
      committedMicro: 24n,
      reservedMicro: 0n,
    });
    // Settling again changes nothing.
    expect(await harness.services.spend.settleUnsettled()).toBe(0);
    expect((await harness.services.store.snapshot(tenantId)).committedMicro).toBe(24n);
  });

  it('the OpenAI-compatible stream ends normally ([DONE], with its usage) when settlement is pending', async () => {
    const { tenantId, key } = await setup(harness, { tier: 4, creditMicro: 1_000_000n });
    const response = await harness.request('/v1/chat/completions', {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'standard',
        messages: [{ role: 'user', content: 'slow' }],
        max_tokens: 20,
        stream: true,
        stream_options: { include_usage: true },
      }),
    });
    expect(response.status).toBe(200);
    const data = (await readWithStoreFrozen(harness, response))
      .split('\n')
      .filter((line) => line.startsWith('data: '))
      .map((line) => line.slice(6));
    expect(data.at(-1)).toBe('[DONE]');
    const chunks = data.slice(0, -1).map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(chunks.some((chunk) => 'error' in chunk)).toBe(false);
    expect(chunks.at(-2)).toMatchObject({ choices: [{ finish_reason: 'length' }] });
    // "user: slow" is 10 characters: 3 prompt tokens.
    expect(chunks.at(-1)).toMatchObject({ usage: { prompt_tokens: 3, completion_tokens: 20 } });
    expect(await harness.services.spend.settleUnsettled()).toBe(1);
    expect((await harness.services.store.snapshot(tenantId)).committedMicro).toBe(23n);
  });
});

describe('200 parallel streams for a tenant whose credits cover at most 50', () => {
  let harness: Harness;
  beforeAll(async () => {
    harness = await createHarness({ config: { localModelTokens: 16, localModelDelayMs: 2 } });
  });
  afterAll(() => harness.close());

  it('never overspends; cost_micro, committed and spend rows agree', async () => {
    // Each request reserves its upper bound, 14 bytes + 24 template tokens + 16 = 54 µ, and is
    // charged 4 + 16 = 20 µ: 1,000 µ admits at least 18 of them at once, and at most 50 as
    // settlements free what they did not use. Distinct users and a generous key limit, so only
    // the budget can refuse.
    const { tenantId, key } = await setup(harness, { tier: 7, creditMicro: 1_000n, rpmLimit: 10_000 });
    const responses = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        infer(harness, key, { prompt: 'a parallel ask', max_tokens: 16, user: `u${i}` }),
      ),
    );
    const statuses = responses.map((response) => response.status);
    const bodies = await Promise.all(responses.map((response) => response.text()));
    const costs = bodies
      .map((text) => events(text).find((event) => event.type === 'done')?.cost_micro)
      .filter((cost): cost is string => cost !== undefined)
      .map(BigInt);
    const admitted = statuses.filter((status) => status === 200).length;
    expect(admitted).toBeGreaterThanOrEqual(18);
    expect(admitted).toBeLessThanOrEqual(50);
    expect(statuses.filter((status) => status === 402)).toHaveLength(200 - admitted);
    expect(costs).toEqual(costs.map(() => 20n));
    const charged = costs.reduce((sum, cost) => sum + cost, 0n);
    const snapshot = await harness.services.store.snapshot(tenantId);
    expect(snapshot).toMatchObject({ committedMicro: charged, reservedMicro: 0n });
    expect(snapshot.committedMicro).toBeLessThanOrEqual(snapshot.creditedMicro);
    await harness.services.spend.flush();
    const rows = await harness.db.select().from(spend).where(eq(spend.tenantId, tenantId));
    expect(rows).toHaveLength(admitted);
    expect(rows.reduce((sum, row) => sum + row.costMicro, 0n)).toBe(charged);
  });
});
