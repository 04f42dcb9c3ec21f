import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKey } from '../../src/keys/keys.js';
import { issueToken } from '../../src/signing/caller-tokens.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';
import { awayFromWindowEdge, freshAddress } from '../support/rate-window.js';

/**
 * Failed authentications per IP (src/limits/auth-failures.ts): 20 a minute, then 429 for that IP
 * for anything but a key this instance already verified or a signed token; successes and
 * requests without credentials never count; nobody else is affected.
 */

let harness: Harness;
let liveKey: string;
let tenantId: string;

beforeAll(async () => {
  harness = await createHarness({ limits: 'production' });
  const tenant = await createTenant(harness.services, { name: 'Failures', tier: 4 });
  await harness.services.store.credit({ tenantId: tenant.id, grantId: 'g', amountMicro: 100_000_000n });
  tenantId = tenant.id;
  liveKey = (await createKey(harness.services, tenant.id, { name: 'live' })).key;
});
afterAll(() => harness.close());

const badKey = 'sg_live_AAAAAAAAAAAA_0123456789abcdefghijklmnopqrstuv';

function inference(app: Harness, from: string, authorization?: string): Promise<Response> {
  return app.requestFrom(from, '/api/v1/inference', {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(authorization === undefined ? {} : { authorization }),
    },
    body: JSON.stringify({ prompt: 'hello', max_tokens: 4 }),
  });
}

function chat(from: string, authorization: string): Promise<Response> {
  return harness.requestFrom(from, '/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization },
    body: JSON.stringify({ model: 'standard', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 }),
  });
}

function trpcList(from: string, authorization?: string): Promise<Response> {
  return harness.requestFrom(from, '/trpc/admin.tenants.list', {
    headers: authorization === undefined ? {} : { authorization },
  });
}

async function statuses(count: number, send: () => Promise<Response>): Promise<Set<number>> {
  const seen = new Set<number>();
  for (let i = 0; i < count; i += 1) seen.add((await send()).status);
  return seen;
}

describe('bad API keys from one IP', () => {
  it('20 get 401, the 21st gets 429 with Retry-After; then only a key already verified here gets in from that IP', async () => {
    await awayFromWindowEdge();
    // Verified once (from elsewhere): this instance holds it.
    expect((await inference(harness, freshAddress(), `Bearer ${liveKey}`)).status).toBe(200);
    const guesser = freshAddress();
    expect(await statuses(20, () => inference(harness, guesser, `Bearer ${badKey}`))).toEqual(new Set([401]));

    const denied = await inference(harness, guesser, `Bearer ${badKey}`);
    expect(denied.status).toBe(429);
    expect(Number(denied.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(denied.headers.get('ratelimit-limit')).toBe('20');
    const body = (await denied.json()) as { error: Record<string, unknown> };
    expect(body.error).toMatchObject({ code: 'rate_limited', dimension: 'ip', limit: 20, remaining: 0 });
    expect(body.error.retryAfterMs).toBeGreaterThan(0);

    // A caller behind the same address with a key this instance holds is not locked out…
    expect((await inference(harness, guesser, `Bearer ${liveKey}`)).status).toBe(200);
    // …but a key it would have to look up costs the blocked client nothing more: 429.
    const unseen = (await createKey(harness.services, tenantId, { name: 'unseen' })).key;
    expect((await inference(harness, guesser, `Bearer ${unseen}`)).status).toBe(429);
    expect((await inference(harness, guesser, `Bearer ${badKey}`)).status).toBe(429);
    expect((await inference(harness, freshAddress(), `Bearer ${unseen}`)).status).toBe(200);
  });

  it('a request without any key is not a failed authentication', async () => {
    await awayFromWindowEdge();
    const from = freshAddress();
    expect(await statuses(30, () => inference(harness, from))).toEqual(new Set([401]));
    expect(await statuses(20, () => inference(harness, from, `Bearer ${badKey}`))).toEqual(new Set([401]));
    expect((await inference(harness, from, `Bearer ${badKey}`)).status).toBe(429);
  });

  it('successful authentications do not count', async () => {
    await awayFromWindowEdge();
    const from = freshAddress();
    const valid = () =>
      harness.requestFrom(from, '/api/v1/key', { headers: { authorization: `Bearer ${liveKey}` } });
    expect(await statuses(30, valid)).toEqual(new Set([200]));
    expect(await statuses(20, () => inference(harness, from, `Bearer ${badKey}`))).toEqual(new Set([401]));
    expect((await inference(harness, from, `Bearer ${badKey}`)).status).toBe(429);
  });

  it("the OpenAI route answers the refusal in OpenAI's error shape", async () => {
    await awayFromWindowEdge();
    const from = freshAddress();
    expect(await statuses(20, () => chat(from, `Bearer ${badKey}`))).toEqual(new Set([401]));
    const denied = await chat(from, `Bearer ${badKey}`);
    expect(denied.status).toBe(429);
    expect(Number(denied.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(await denied.json()).toEqual({
      error: {
        message: 'Too many failed authentications from this address',
        type: 'rate_limit_error',
        param: null,
        code: 'rate_limited',
      },
    });
    expect((await chat(freshAddress(), `Bearer ${liveKey}`)).status).toBe(200);
  });
});

describe('bad bearer tokens on /trpc from one IP', () => {
  it('20 get 401, the 21st gets 429 in tRPC error shape; then only a signed token gets in from that IP', async () => {
    await awayFromWindowEdge();
    const guesser = freshAddress();
    const forged = 'Bearer eyJhbGciOiJFUzI1NiJ9.e30.c2ln';
    expect(await statuses(20, () => trpcList(guesser, forged))).toEqual(new Set([401]));

    const denied = await trpcList(guesser, forged);
    expect(denied.status).toBe(429);
    expect(Number(denied.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(await denied.json()).toMatchObject({
      error: {
        message: 'Too many failed authentications from this address',
        data: {
          code: 'TOO_MANY_REQUESTS',
          httpStatus: 429,
          appCode: 'rate_limited',
          dimension: 'ip',
          limit: 20,
          requestId: denied.headers.get('x-request-id'),
        },
      },
    });
    // Further guesses are refused in the same shape, without counting; a real bearer gets in.
    const blocked = await trpcList(guesser, forged);
    expect(blocked.status).toBe(429);
    expect(await blocked.json()).toMatchObject({
      error: {
        data: { httpStatus: 429, appCode: 'rate_limited', requestId: blocked.headers.get('x-request-id') },
      },
    });
    // A signed token cannot be guessed: it still works. The static admin token is not compared for
    // a blocked client, so it cannot be guessed past the budget either.
    const { token } = await issueToken(harness.services, { role: 'operator' });
    expect((await trpcList(guesser, `Bearer ${token}`)).status).toBe(200);
    expect((await trpcList(guesser, `Bearer ${harness.adminToken}`)).status).toBe(429);
    expect((await trpcList(freshAddress(), `Bearer ${harness.adminToken}`)).status).toBe(200);
  });

  it('requests without an Authorization header are not failed authentications', async () => {
    await awayFromWindowEdge();
    const from = freshAddress();
    expect(await statuses(30, () => trpcList(from))).toEqual(new Set([401]));
    expect((await trpcList(from, `Bearer ${harness.adminToken}`)).status).toBe(200);
  });

  it('bad tRPC bearers and bad API keys from one IP share one budget', async () => {
    await awayFromWindowEdge();
    const from = freshAddress();
    expect(await statuses(10, () => trpcList(from, 'Bearer wrong'))).toEqual(new Set([401]));
    expect(await statuses(10, () => inference(harness, from, `Bearer ${badKey}`))).toEqual(new Set([401]));
    expect((await trpcList(from, 'Bearer wrong')).status).toBe(429);
  });
});

describe('two instances sharing Redis', () => {
  it('count one budget: failures on one instance and the 21st on the other is refused', async () => {
    const second = await createHarness({ shareWith: harness, limits: 'production' });
    try {
      await awayFromWindowEdge();
      const from = freshAddress();
      expect(await statuses(20, () => inference(harness, from, `Bearer ${badKey}`))).toEqual(new Set([401]));
      expect((await inference(second, from, `Bearer ${badKey}`)).status).toBe(429);
    } finally {
      await second.close();
    }
  });
});
