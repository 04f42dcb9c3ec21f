import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { eq } from 'drizzle-orm';
import { createLocalJWKSet, type JSONWebKeySet, jwtVerify } from 'jose';
import { HttpResponse, http } from 'msw';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { spend } from '../../db/schema/index.js';
import { createKey } from '../../src/keys/keys.js';
import { costMicro } from '../../src/pricing/pricing.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { CircuitBreaker } from '../../src/upstream/breaker.js';
import { createHarness, type Harness } from '../support/harness.js';
import { mockNetwork, type SseStep, sseBody } from '../support/msw.js';
import { events } from '../support/sse.js';

const FINN = 'http://finn.test';

interface ErrorBody {
  error: { code: string; message: string; failed?: string[] };
}

const token = (content: string) => ({ data: JSON.stringify({ type: 'token', content }) });
const done = (usage?: { prompt_tokens?: number; completion_tokens: number }) => ({
  data: JSON.stringify({ type: 'done', ...(usage === undefined ? {} : { usage }) }),
});

/** finn's behaviour, switched per test: what /health says and how /api/v1/inference answers. */
const finn = {
  contractVersion: '1.0.0',
  calls: 0,
  lastAuthorization: '' as string | null,
  lastBody: undefined as unknown,
  lastSignal: undefined as AbortSignal | undefined,
  answer: (_call: number, _signal: AbortSignal): Response =>
    new HttpResponse(sseBody([token('a'), done()]), { headers: { 'content-type': 'text/event-stream' } }),
};

const network = mockNetwork(
  http.get(`${FINN}/health`, () =>
    HttpResponse.json({ status: 'ok', contract_version: finn.contractVersion }),
  ),
  http.post(`${FINN}/api/v1/inference`, async ({ request }) => {
    finn.calls += 1;
    finn.lastAuthorization = request.headers.get('authorization');
    finn.lastBody = await request.json();
    finn.lastSignal = request.signal;
    return finn.answer(finn.calls, request.signal);
  }),
);

function stream(steps: SseStep[], headers: Record<string, string> = {}, signal?: AbortSignal): Response {
  return new HttpResponse(sseBody(steps, signal), {
    headers: { 'content-type': 'text/event-stream', ...headers },
  });
}

let now = Date.UTC(2026, 10, 28, 12);
const clock = { now: () => now };
const breaker = new CircuitBreaker(clock);
let harness: Harness;

beforeAll(async () => {
  harness = await createHarness({
    config: { upstream: 'finn', upstreamUrl: FINN, upstreamTimeoutMs: 1_500 },
    clock,
    upstreamOverrides: { retryDelaysMs: [10, 20], breaker },
  });
});
afterAll(async () => {
  network.close();
  await harness.close();
});
afterEach(() => {
  finn.calls = 0;
  finn.contractVersion = '1.0.0';
  breaker.success();
});

async function tenantWithKey(creditMicro = 1_000_000n, tier = 4) {
  const tenant = await createTenant(harness.services, { name: 'Finn', tier });
  await harness.services.store.credit({ tenantId: tenant.id, grantId: 'g', amountMicro: creditMicro });
  const { key } = await createKey(harness.services, tenant.id, { name: 'k', rpmLimit: 1_000 });
  return { tenantId: tenant.id, key };
}

function infer(key: string, body: Record<string, unknown> = {}, signal?: AbortSignal) {
  return harness.request('/api/v1/inference', {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'hello finn', max_tokens: 8, pool: 'standard', ...body }),
    ...(signal === undefined ? {} : { signal }),
  });
}

async function balance(tenantId: string) {
  return harness.services.store.snapshot(tenantId);
}

describe('UPSTREAM=finn (S2S contract v1.0.0, msw)', () => {
  it('sends a verifiable ES256 S2S token and relays finn’s tokens, headers and usage', async () => {
    const { tenantId, key } = await tenantWithKey();
    finn.answer = () =>
      stream([token('Hel'), token('lo'), token('!'), done({ prompt_tokens: 5, completion_tokens: 3 })], {
        'X-Pool-Used': 'standard',
        'X-Personality-Id': 'persona-7',
      });
    const response = await infer(key);
    expect(response.status).toBe(200);
    expect(response.headers.get('x-pool-used')).toBe('standard');
    expect(response.headers.get('x-personality-id')).toBe('persona-7');
    const received = events(await response.text());
    expect(received.filter((e) => e.type === 'token').map((e) => e.content)).toEqual(['Hel', 'lo', '!']);
    const last = received.at(-1);
    // finn's own count is the usage authority (5 prompt tokens, not our estimate of 3).
    expect(last?.usage).toEqual({ prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 });
    expect(last?.cost_micro).toBe(costMicro('standard', 8).toString());
    const after = await balance(tenantId);
    expect(after.committedMicro).toBe(costMicro('standard', 8));

    expect(finn.lastBody).toMatchObject({ prompt: 'hello finn', max_tokens: 8, pool: 'standard' });
    const jwks = (await (await harness.request('/.well-known/jwks.json')).json()) as JSONWebKeySet;
    const bearer = finn.lastAuthorization?.replace(/^Bearer /, '') ?? '';
    const { payload, protectedHeader } = await jwtVerify(bearer, createLocalJWKSet(jwks), {
      issuer: harness.services.config.jwtIssuer,
      audience: harness.services.config.s2sAudience,
      currentDate: new Date(now),
    });
    expect(protectedHeader.alg).toBe('ES256');
    expect(payload).toMatchObject({ tenant_id: tenantId, tier: 4, pool: 'standard' });
    expect(payload.exp).toBe((payload.iat ?? 0) + 60);
    expect(typeof payload.jti).toBe('string');
    expect(payload.budget_reservation_id).toMatch(/^res_/);
  });

  it('retries a 500 before the first byte and streams from the next attempt', async () => {
    const { key } = await tenantWithKey();
    finn.answer = (call) =>
      call === 1 ? new HttpResponse('boom', { status: 500 }) : stream([token('ok'), done()]);
    const response = await infer(key);
    expect(response.status).toBe(200);
    expect(events(await response.text()).map((e) => e.type)).toEqual(['token', 'done']);
    expect(finn.calls).toBe(2);
  });

  it('gives up after two retries with 503 upstream_unavailable and releases the whole reservation', async () => {
    const { tenantId, key } = await tenantWithKey();
    finn.answer = () => new HttpResponse('down', { status: 503 });
    const response = await infer(key);
    expect(response.status).toBe(503);
    expect(((await response.json()) as ErrorBody).error).toMatchObject({ code: 'upstream_unavailable' });
    expect(finn.calls).toBe(3);
    const after = await balance(tenantId);
    expect(after.reservedMicro).toBe(0n);
    expect(after.committedMicro).toBe(0n);
  });

  it('does not retry a 4xx, and a 4xx does not count towards the breaker', async () => {
    const { key } = await tenantWithKey();
    finn.answer = () => new HttpResponse('bad token', { status: 401 });
    for (let i = 0; i < 4; i += 1) expect((await infer(key)).status).toBe(503);
    expect(finn.calls).toBe(4);
    expect(breaker.state).toBe('closed');
  });

  it('upstream dies mid-stream: an error event, and what was delivered is billed', async () => {
    const { tenantId, key } = await tenantWithKey();
    finn.answer = () => stream([token('one'), token(' two'), { delayMs: 50 }, { fail: 'connection reset' }]);
    const response = await infer(key, { prompt: 'abcdefgh' }); // 2 prompt tokens by the estimate
    expect(response.status).toBe(200);
    const received = events(await response.text());
    expect(received.map((e) => e.type)).toEqual(['token', 'token', 'error']);
    expect(received.at(-1)?.code).toBe('upstream_unavailable');
    const after = await balance(tenantId);
    expect(after.reservedMicro).toBe(0n);
    expect(after.committedMicro).toBe(costMicro('standard', 2 + 2));
    const rows = await harness.db.select().from(spend).where(eq(spend.tenantId, tenantId));
    await vi.waitFor(async () => {
      await harness.services.spend.flush();
      const flushed = await harness.db.select().from(spend).where(eq(spend.tenantId, tenantId));
      expect(flushed).toHaveLength(1);
      expect(flushed[0]?.completionTokens).toBe(2);
    });
    expect(rows.length).toBeLessThanOrEqual(1);
  });

  it('an upstream that never answers times out, and each timeout counts towards the breaker', async () => {
    const { tenantId, key } = await tenantWithKey();
    finn.answer = () => new Promise<Response>(() => undefined) as unknown as Response;
    for (let i = 0; i < 3; i += 1) {
      const response = await infer(key);
      expect(response.status).toBe(503);
      expect(((await response.json()) as ErrorBody).error.message).toMatch(/timed out/);
    }
    expect(breaker.state).toBe('open');
    expect((await balance(tenantId)).reservedMicro).toBe(0n);
  });

  it('skips event types a later minor version may add', async () => {
    const { key } = await tenantWithKey();
    finn.answer = () =>
      stream([
        token('a'),
        { data: JSON.stringify({ type: 'ping' }) },
        token('b'),
        done({ completion_tokens: 2 }),
      ]);
    const received = events(await (await infer(key)).text());
    expect(received.map((e) => e.type)).toEqual(['token', 'token', 'done']);
  });

  it('bounds the reported usage: never below what was relayed, never above what was reserved', async () => {
    const { tenantId, key } = await tenantWithKey();
    // Three tokens relayed, but finn claims none were generated.
    finn.answer = () =>
      stream([token('a'), token('b'), token('c'), done({ prompt_tokens: 1, completion_tokens: 0 })]);
    const low = events(await (await infer(key)).text()).at(-1);
    expect(low?.usage).toMatchObject({ prompt_tokens: 1, completion_tokens: 3 });
    expect(low?.cost_micro).toBe(costMicro('standard', 4).toString());

    // An absurd report is charged up to the reservation ("hello finn" at its bound, 10 bytes + 24
    // template tokens, + max_tokens 8) and counted as UNDER_RESERVED.
    finn.answer = () =>
      stream([token('a'), done({ prompt_tokens: 900_000_000, completion_tokens: 900_000_000 })]);
    const high = events(await (await infer(key)).text()).at(-1);
    expect(high?.type).toBe('done');
    expect(high?.usage?.completion_tokens).toBe(8);
    expect(high?.cost_micro).toBe(costMicro('standard', 10 + 24 + 8).toString());
    expect(harness.logs.filter((line) => line.msg === 'UNDER_RESERVED').at(-1)).toMatchObject({
      reservationId: high?.reservation_id,
    });
    const after = await balance(tenantId);
    expect(after.reservedMicro).toBe(0n);
    expect(after.committedMicro).toBe(costMicro('standard', 4) + costMicro('standard', 42));
  });

  it('a stream that ends without a done event is a failure, not a success', async () => {
    const { key } = await tenantWithKey();
    finn.answer = () => stream([token('x')]);
    const received = events(await (await infer(key)).text());
    expect(received.map((e) => e.type)).toEqual(['token', 'error']);
  });

  it('the total timeout cuts a stalled stream: an error event, delivered tokens billed', async () => {
    const { tenantId, key } = await tenantWithKey();
    // finn would send `done` after 5 s, past the 1.5 s total: only a cut ends the stream with an error.
    finn.answer = (_call, signal) => stream([token('slow'), { delayMs: 5_000 }, done()], {}, signal);
    const received = events(await (await infer(key, { prompt: 'abcd' })).text());
    expect(received.map((e) => e.type)).toEqual(['token', 'error']);
    expect((await balance(tenantId)).committedMicro).toBe(costMicro('standard', 1 + 1));
  });

  it('opens the breaker after 3 failed requests, refuses without calling, and recovers through one probe', async () => {
    const { tenantId, key } = await tenantWithKey();
    finn.answer = () => new HttpResponse(null, { status: 502 });
    for (let i = 0; i < 3; i += 1) expect((await infer(key)).status).toBe(503);
    expect(finn.calls).toBe(9); // 3 requests × (1 + 2 retries)
    expect(breaker.state).toBe('open');

    const refused = await infer(key);
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as ErrorBody).error.message).toMatch(/circuit open/);
    expect(finn.calls).toBe(9);
    expect((await balance(tenantId)).reservedMicro).toBe(0n);

    now += 30_000;
    expect(breaker.state).toBe('half_open');
    // The probe fails: open again for another 30 s, after one call (no retries for a probe).
    expect((await infer(key)).status).toBe(503);
    expect(finn.calls).toBe(10);
    expect(breaker.state).toBe('open');

    now += 30_000;
    finn.answer = () => stream([token('back'), done()]);
    const probe = await infer(key);
    expect(probe.status).toBe(200);
    expect(events(await probe.text()).map((e) => e.type)).toEqual(['token', 'done']);
    expect(breaker.state).toBe('closed');
    expect(finn.calls).toBe(11);
  });

  it('a client disconnect aborts the call to finn and bills what was delivered', async () => {
    // A real finn on loopback, so the test sees the gateway drop the connection.
    let upstreamClosed = false;
    const server = createServer((request, response) => {
      if (request.url === '/health') return void response.end(JSON.stringify({ contract_version: '1.0.0' }));
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.write(`data: ${token('a').data}\n\ndata: ${token('b').data}\n\n`);
      response.on('close', () => {
        upstreamClosed = true;
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const local = await createHarness({
      config: { upstream: 'finn', upstreamUrl: `http://127.0.0.1:${port}` },
    });
    try {
      const tenant = await createTenant(local.services, { name: 'Gone', tier: 4 });
      await local.services.store.credit({ tenantId: tenant.id, grantId: 'g', amountMicro: 1_000_000n });
      const { key } = await createKey(local.services, tenant.id, { name: 'k' });
      const client = new AbortController();
      const response = await local.request('/api/v1/inference', {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: 'abcd', max_tokens: 8, pool: 'standard' }),
        signal: client.signal,
      });
      const reader = (response.body as ReadableStream<Uint8Array>).getReader();
      let text = '';
      while (events(text).filter((e) => e.type === 'token').length < 2) {
        const { value, done: ended } = await reader.read();
        if (ended) throw new Error(`the stream ended early: ${text}`);
        text += new TextDecoder().decode(value);
      }
      expect(upstreamClosed).toBe(false);
      client.abort();
      await vi.waitFor(() => expect(upstreamClosed).toBe(true), { timeout: 2_000 });
      await vi.waitFor(async () => {
        const after = await local.services.store.snapshot(tenant.id);
        expect(after.reservedMicro).toBe(0n);
        // The prompt (1 token by the estimate) and the 2 delivered tokens, nothing more.
        expect(after.committedMicro).toBe(costMicro('standard', 1 + 2));
      });
    } finally {
      await local.close();
      server.closeAllConnections();
      server.close();
    }
  });
});

describe('finn contract version (GET /health)', () => {
  it('a different major version: /ready and admin.system.info say incompatible; requests are refused without a call', async () => {
    const { tenantId, key } = await tenantWithKey();
    finn.contractVersion = '2.0.0';
    harness.services.upstream.stop?.();
    harness.services.upstream.start?.();
    await vi.waitFor(() => expect(harness.services.upstream.status().contract.status).toBe('incompatible'));

    const ready = await harness.request('/ready');
    expect(ready.status).toBe(503);
    expect(((await ready.json()) as ErrorBody).error.failed).toContain('upstream');
    const info = await harness.adminRequest('/trpc/admin.system.info');
    expect(
      ((await info.json()) as { result: { data: { upstream: { contract: unknown } } } }).result.data.upstream
        .contract,
    ).toMatchObject({
      status: 'incompatible',
      version: '2.0.0',
      expected: '1.0.0',
    });
    const refused = await infer(key);
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as ErrorBody).error.code).toBe('upstream_unavailable');
    expect(finn.calls).toBe(0);
    expect((await balance(tenantId)).reservedMicro).toBe(0n);
    expect(harness.logs.some((line) => line.msg?.includes('contract incompatible'))).toBe(true);
  });

  it('a different minor version only warns: still ready and routed', async () => {
    const { key } = await tenantWithKey();
    finn.contractVersion = '1.4.0';
    harness.services.upstream.stop?.();
    harness.services.upstream.start?.();
    await vi.waitFor(() => expect(harness.services.upstream.status().contract.status).toBe('minor_mismatch'));
    expect((await harness.request('/ready')).status).toBe(200);
    expect(harness.logs.some((line) => line.level === 'warn' && line.contractVersion === '1.4.0')).toBe(true);
    const response = await infer(key);
    expect(response.status).toBe(200);
    await response.text();
    expect(finn.calls).toBe(1);
  });
});
