import { HttpResponse, http } from 'msw';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { estimate } from '../../src/inference/estimate.js';
import { createKey } from '../../src/keys/keys.js';
import { costMicro, DEFAULT_PRICES } from '../../src/pricing/pricing.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';
import { mockNetwork, sseBody } from '../support/msw.js';
import { events, infer } from '../support/sse.js';

/**
 * The reservation is an upper bound of what the upstream can report (DESIGN.md §1): a prompt an
 * upstream counts at one token per character — CJK text, ~4× the gateway's own estimate — is billed
 * exactly at its reported usage, on both routes. A report above the reservation is charged the
 * reservation, logged UNDER_RESERVED and counted.
 */
const UPSTREAM = 'http://models.test/v1';

type Messages = { role: string; content: string }[];
/** One token per character, plus OpenAI's 3 per message and 3 to prime the reply. */
const perCharacter = (messages: Messages) =>
  messages.reduce((sum, message) => sum + message.content.length + 3, 3);
const upstream = { promptTokens: perCharacter };

const network = mockNetwork(
  http.post(`${UPSTREAM}/chat/completions`, async ({ request }) => {
    const body = (await request.json()) as { max_tokens: number; messages: Messages; stream?: boolean };
    const usage = { prompt_tokens: upstream.promptTokens(body.messages), completion_tokens: body.max_tokens };
    const contents = Array.from({ length: body.max_tokens }, (_, i) => `t${i}`);
    if (body.stream !== true) {
      return HttpResponse.json({
        choices: [{ index: 0, message: { role: 'assistant', content: contents.join('') } }],
        usage,
      });
    }
    const chunk = (value: object) => ({ data: JSON.stringify(value) });
    return new HttpResponse(
      sseBody([
        ...contents.map((content) => chunk({ choices: [{ delta: { content } }] })),
        chunk({ choices: [], usage }),
        { data: '[DONE]' },
      ]),
      { headers: { 'content-type': 'text/event-stream' } },
    );
  }),
);

let harness: Harness;
beforeAll(async () => {
  harness = await createHarness({ config: { upstream: 'openai', upstreamUrl: UPSTREAM } });
});
afterAll(async () => {
  network.close();
  await harness.close();
});
afterEach(() => {
  upstream.promptTokens = perCharacter;
});

/** A tier-4 tenant (the standard pool, 1 µ per token) with 1 credit, and its key. */
async function funded() {
  const tenant = await createTenant(harness.services, { name: 'Bound', tier: 4 });
  await harness.services.store.credit({ tenantId: tenant.id, grantId: 'g', amountMicro: 1_000_000n });
  const { key } = await createKey(harness.services, tenant.id, { name: 'k' });
  return { tenantId: tenant.id, key };
}

const CJK = '字'.repeat(100_000);

describe('a prompt counted at one token per character', () => {
  it('native route: billed exactly its reported usage, nothing under-reserved', async () => {
    const { tenantId, key } = await funded();
    const response = await infer(harness, key, { prompt: CJK, max_tokens: 16, pool: 'standard' });
    expect(response.status).toBe(200);
    const done = events(await response.text()).at(-1);
    // 100,000 characters + 3 for the message + 3 for the reply: 100,006 prompt tokens.
    expect(done).toMatchObject({
      type: 'done',
      usage: { prompt_tokens: 100_006, completion_tokens: 16, total_tokens: 100_022 },
      cost_micro: costMicro('standard', 100_022).toString(),
    });
    expect(await harness.services.store.snapshot(tenantId)).toMatchObject({
      committedMicro: costMicro('standard', 100_022),
      reservedMicro: 0n,
    });
    expect(harness.logs.filter((line) => line.msg === 'UNDER_RESERVED')).toEqual([]);
  });

  it('OpenAI-compatible route: billed exactly its reported usage', async () => {
    const { tenantId, key } = await funded();
    const response = await harness.request('/v1/chat/completions', {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'standard',
        messages: [
          { role: 'system', content: 'Answer briefly.' },
          { role: 'user', content: CJK },
        ],
        max_tokens: 16,
      }),
    });
    expect(response.status).toBe(200);
    // 15 + 100,000 characters + 3 per message + 3 for the reply: 100,024 prompt tokens.
    expect(((await response.json()) as { usage: unknown }).usage).toEqual({
      prompt_tokens: 100_024,
      completion_tokens: 16,
      total_tokens: 100_040,
    });
    expect(await harness.services.store.snapshot(tenantId)).toMatchObject({
      committedMicro: costMicro('standard', 100_040),
      reservedMicro: 0n,
    });
    expect(harness.logs.filter((line) => line.msg === 'UNDER_RESERVED')).toEqual([]);
  });
});

describe('a report above the reservation', () => {
  it('is charged the reservation, logged UNDER_RESERVED and counted in spicegate_under_reserved_total', async () => {
    const { tenantId, key } = await funded();
    upstream.promptTokens = () => 1_000;
    const reservation = estimate('standard', 'abcd', 8, DEFAULT_PRICES).costMicro;
    const response = await infer(harness, key, { prompt: 'abcd', max_tokens: 8, pool: 'standard' });
    const done = events(await response.text()).at(-1);
    expect(done).toMatchObject({
      type: 'done',
      usage: { prompt_tokens: 1_000, completion_tokens: 8 },
      cost_micro: reservation.toString(),
    });
    expect(await harness.services.store.snapshot(tenantId)).toMatchObject({
      committedMicro: reservation,
      reservedMicro: 0n,
    });
    expect(harness.logs.filter((line) => line.msg === 'UNDER_RESERVED')).toEqual([
      expect.objectContaining({
        level: 'warn',
        event: 'UNDER_RESERVED',
        tenantId,
        reservationId: done?.reservation_id,
        promptTokens: 1_000,
        reservedMicro: reservation.toString(),
      }),
    ]);
    const metrics = await (await harness.request('/metrics')).text();
    expect(metrics).toMatch(/^spicegate_under_reserved_total 1$/m);
  });
});

describe('a report priced beyond the largest amount the engine settles', () => {
  it('is still charged the reservation and ends with done, not a failed settlement', async () => {
    // 2,000,000 µ a token: a report of 10^9 prompt tokens would price at 2·10^15 µ, past the
    // engine's 10^15; the reservation (36 tokens) is what is charged.
    const prices = { ...DEFAULT_PRICES, standard: 2_000_000_000n };
    const dear = await createHarness({
      shareWith: harness,
      config: { upstream: 'openai', upstreamUrl: UPSTREAM, prices },
    });
    try {
      const tenant = await createTenant(dear.services, { name: 'Dear', tier: 4 });
      await dear.services.store.credit({ tenantId: tenant.id, grantId: 'g', amountMicro: 1_000_000_000n });
      const { key } = await createKey(dear.services, tenant.id, { name: 'k' });
      upstream.promptTokens = () => 1_000_000_000;
      const reservation = estimate('standard', 'abcd', 8, prices).costMicro;
      const response = await infer(dear, key, { prompt: 'abcd', max_tokens: 8, pool: 'standard' });
      expect(events(await response.text()).at(-1)).toMatchObject({
        type: 'done',
        cost_micro: reservation.toString(),
      });
      expect(await dear.services.store.snapshot(tenant.id)).toMatchObject({
        committedMicro: reservation,
        reservedMicro: 0n,
      });
    } finally {
      await dear.close();
    }
  });
});
