import { HttpResponse, http } from 'msw';
import OpenAI from 'openai';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { poolDecisions } from '../../db/schema/index.js';
import { createKey } from '../../src/keys/keys.js';
import { costMicro } from '../../src/pricing/pricing.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';
import { mockNetwork, type SseStep, sseBody } from '../support/msw.js';
import { serve } from '../support/serve.js';

/**
 * UPSTREAM=openai: the gateway in front of an OpenAI-compatible server (msw), driven by the
 * official `openai` client as a user would, with a model alias and a per-pool upstream model.
 */
const UPSTREAM = 'http://models.test/v1';

const upstream = {
  calls: 0,
  authorization: null as string | null,
  body: undefined as
    | { model?: string; messages?: unknown; max_tokens?: number; stream?: boolean }
    | undefined,
  answer: (): Response => answer(['Hi', ' there'], { prompt_tokens: 4, completion_tokens: 2 }),
};

/** As a real server answers: a stream when asked for one, else one JSON completion. */
function answer(contents: string[], usage?: { prompt_tokens: number; completion_tokens: number }): Response {
  if (upstream.body?.stream === true) return chunks(contents, usage);
  return HttpResponse.json({
    id: 'up-1',
    object: 'chat.completion',
    choices: [
      { index: 0, message: { role: 'assistant', content: contents.join('') }, finish_reason: 'stop' },
    ],
    ...(usage === undefined ? {} : { usage }),
  });
}

const network = mockNetwork(
  http.post(`${UPSTREAM}/chat/completions`, async ({ request }) => {
    upstream.calls += 1;
    upstream.authorization = request.headers.get('authorization');
    upstream.body = (await request.json()) as typeof upstream.body;
    return upstream.answer();
  }),
);

function chunks(
  contents: string[],
  usage?: { prompt_tokens: number; completion_tokens: number },
  end: SseStep[] = [{ data: '[DONE]' }],
): Response {
  const chunk = (delta: object, extra: object = {}) => ({
    data: JSON.stringify({
      id: 'up-1',
      object: 'chat.completion.chunk',
      choices: [{ index: 0, delta }],
      ...extra,
    }),
  });
  const steps: SseStep[] = [
    chunk({ role: 'assistant', content: '' }),
    ...contents.map((content) => chunk({ content })),
    ...(usage === undefined ? [] : [{ data: JSON.stringify({ id: 'up-1', choices: [], usage }) }]),
    ...end,
  ];
  return new HttpResponse(sseBody(steps), { headers: { 'content-type': 'text/event-stream' } });
}

let harness: Harness;
let server: { url: string; close(): Promise<void> };

beforeAll(async () => {
  harness = await createHarness({
    config: {
      upstream: 'openai',
      upstreamUrl: UPSTREAM,
      upstreamApiKey: 'sk-upstream-secret',
      upstreamModels: { cheap: 'tiny-model-v3' },
      modelAliases: { 'gpt-4o-mini': 'cheap', 'gpt-4o': 'reasoning' },
    },
    upstreamOverrides: { retryDelaysMs: [5, 5] },
  });
  server = await serve(harness.app);
});
afterAll(async () => {
  network.close();
  await server.close();
  await harness.close();
});
afterEach(() => {
  upstream.calls = 0;
  upstream.answer = () => answer(['Hi', ' there'], { prompt_tokens: 4, completion_tokens: 2 });
});

async function client(tier = 4) {
  const tenant = await createTenant(harness.services, { name: 'SDK', tier });
  await harness.services.store.credit({ tenantId: tenant.id, grantId: 'g', amountMicro: 1_000_000n });
  const { key } = await createKey(harness.services, tenant.id, { name: 'sdk' });
  return {
    tenantId: tenant.id,
    key,
    openai: new OpenAI({ apiKey: key, baseURL: `${server.url}/v1`, maxRetries: 0 }),
  };
}

describe('UPSTREAM=openai through the official client', () => {
  it('streams through an alias: the upstream gets its model, our messages and its key; its usage is billed', async () => {
    const { tenantId, openai } = await client();
    const stream = await openai.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Say hi' },
      ],
      max_tokens: 10,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage: OpenAI.CompletionUsage | undefined | null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe('Hi there');
    // The upstream's usage chunk is the authority: 4 prompt tokens, not our estimate.
    expect(usage).toMatchObject({ prompt_tokens: 4, completion_tokens: 2, total_tokens: 6 });
    expect(upstream.body).toMatchObject({
      model: 'tiny-model-v3',
      max_tokens: 10,
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Say hi' },
      ],
    });
    expect(upstream.authorization).toBe('Bearer sk-upstream-secret');
    expect(await harness.services.store.snapshot(tenantId)).toMatchObject({
      committedMicro: costMicro('cheap', 6),
      reservedMicro: 0n,
    });
  });

  it('answers a non-streaming request from one JSON answer of the upstream; its usage is billed', async () => {
    const { tenantId, openai } = await client();
    const completion = await openai.chat.completions.create({
      model: 'cheap',
      messages: [{ role: 'user', content: 'Say hi' }],
      max_tokens: 10,
    });
    // Nothing to stream, so the upstream is not asked for a stream (one body to parse, not ~20).
    expect(upstream.body?.stream).toBeUndefined();
    expect(completion.choices[0]?.message.content).toBe('Hi there');
    expect(completion.choices[0]?.finish_reason).toBe('stop');
    expect(completion.usage).toMatchObject({ prompt_tokens: 4, completion_tokens: 2 });
    expect(await harness.services.store.snapshot(tenantId)).toMatchObject({
      committedMicro: costMicro('cheap', 6),
      reservedMicro: 0n,
    });
  });

  it('a JSON answer without usage is billed by the gateway’s estimate', async () => {
    const { tenantId, openai } = await client();
    upstream.answer = () => answer(['Hello there, friend']);
    const completion = await openai.chat.completions.create({
      model: 'cheap',
      messages: [{ role: 'user', content: 'abcd' }],
      max_tokens: 10,
    });
    expect(completion.choices[0]?.message.content).toBe('Hello there, friend');
    // "user: abcd" (10 characters) → 3 prompt tokens; 19 characters of answer → 5 tokens.
    expect(completion.usage).toMatchObject({ prompt_tokens: 3, completion_tokens: 5 });
    expect((await harness.services.store.snapshot(tenantId)).committedMicro).toBe(costMicro('cheap', 8));
  });

  it('a malformed answer is a 503 or an error chunk, never a crash; what was delivered is billed', async () => {
    const { tenantId, key } = await client();
    upstream.answer = () => HttpResponse.json({ choices: [{ message: { content: 42 } }] });
    const { openai } = { openai: new OpenAI({ apiKey: key, baseURL: `${server.url}/v1`, maxRetries: 0 }) };
    const error = await openai.chat.completions
      .create({ model: 'cheap', messages: [{ role: 'user', content: 'x' }], max_tokens: 10 })
      .catch((thrown: unknown) => thrown);
    expect((error as InstanceType<typeof OpenAI.APIError>).status).toBe(503);

    // In a stream: a usage report with a negative count ends it with an error chunk.
    upstream.answer = () =>
      chunks(['one'], undefined, [
        { data: JSON.stringify({ choices: [], usage: { prompt_tokens: -1, completion_tokens: 1 } }) },
        { data: '[DONE]' },
      ]);
    const response = await fetch(`${server.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'cheap', messages: [{ role: 'user', content: 'abcd' }], stream: true }),
    });
    const data = (await response.text()).split('\n').filter((line) => line.startsWith('data: '));
    expect(data.at(-1)).toContain('upstream_unavailable');
    // The prompt was sent either way: "user: x" is 2 tokens by the estimate, nothing delivered;
    // then 3 prompt tokens + the 1 delivered for the cut stream.
    expect(await harness.services.store.snapshot(tenantId)).toMatchObject({
      committedMicro: costMicro('cheap', 2) + costMicro('cheap', 3 + 1),
      reservedMicro: 0n,
    });
    // Two failed requests count towards the breaker; a good answer closes the count again.
    upstream.answer = () => answer(['ok'], { prompt_tokens: 1, completion_tokens: 1 });
    await openai.chat.completions.create({ model: 'cheap', messages: [{ role: 'user', content: 'x' }] });
    expect(harness.services.upstream.status().breaker).toBe('closed');
  });

  it('reads what it asked for when the content type is missing or unusual; holds a JSON answer to max_tokens', async () => {
    const { key, openai } = await client();
    const stream = (contentType: string | undefined) => () =>
      new HttpResponse(
        sseBody([
          { data: JSON.stringify({ choices: [{ delta: { content: 'a' } }] }) },
          { data: JSON.stringify({ choices: [{ delta: { content: 'b' } }] }) },
          { data: '[DONE]' },
        ]),
        contentType === undefined ? {} : { headers: { 'content-type': contentType } },
      );
    for (const contentType of [undefined, 'Text/Event-Stream; charset=UTF-8']) {
      upstream.answer = stream(contentType);
      const response = await fetch(`${server.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'cheap', messages: [{ role: 'user', content: 'x' }], stream: true }),
      });
      const text = await response.text();
      expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
      expect(text).toContain('"content":"b"');
    }
    // No message content (a tool call) is an empty answer, not a failure.
    upstream.answer = () =>
      HttpResponse.json({ choices: [{ message: { role: 'assistant', tool_calls: [] } }] });
    const empty = await openai.chat.completions.create({
      model: 'cheap',
      messages: [{ role: 'user', content: 'x' }],
    });
    expect(empty.choices[0]?.message.content).toBe('');
    // An upstream that ignored max_tokens (says 40 tokens for a cap of 10): a quarter of its text.
    upstream.answer = () =>
      HttpResponse.json({
        choices: [{ message: { content: 'x'.repeat(160) } }],
        usage: { prompt_tokens: 1, completion_tokens: 40 },
      });
    const capped = await openai.chat.completions.create({
      model: 'cheap',
      messages: [{ role: 'user', content: 'x' }],
      max_tokens: 10,
    });
    expect(capped.choices[0]?.message.content).toBe('x'.repeat(40));
    expect(capped.usage).toMatchObject({ completion_tokens: 10 });
  });

  it('lists the pools and the aliases the key may use', async () => {
    const free = await client(2);
    expect((await free.openai.models.list()).data.map((model) => model.id)).toEqual([
      'cheap',
      'standard',
      'gpt-4o-mini',
    ]);
    const pro = await client(5);
    expect((await pro.openai.models.list()).data.map((model) => model.id)).toEqual([
      'cheap',
      'standard',
      'reasoning',
      'gpt-4o-mini',
      'gpt-4o',
    ]);
  });

  it('an upstream that keeps failing: 503 in OpenAI’s error shape after two retries, nothing charged', async () => {
    const { tenantId, openai } = await client();
    upstream.answer = () => new HttpResponse('overloaded', { status: 500 });
    const error = await openai.chat.completions
      .create({ model: 'cheap', messages: [{ role: 'user', content: 'x' }] })
      .catch((thrown: unknown) => thrown);
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect((error as InstanceType<typeof OpenAI.APIError>).status).toBe(503);
    expect((error as InstanceType<typeof OpenAI.APIError>).code).toBe('upstream_unavailable');
    expect(upstream.calls).toBe(3);
    expect(await harness.services.store.snapshot(tenantId)).toMatchObject({
      committedMicro: 0n,
      reservedMicro: 0n,
    });
    // The upstream's credential never reaches the caller or the log.
    expect(JSON.stringify(harness.logs)).not.toContain('sk-upstream-secret');
    // One request that failed after its retries is one breaker failure, not three.
    expect(harness.services.upstream.status().breaker).toBe('closed');
  });

  it('a stream cut before [DONE] ends with an error chunk and no [DONE]; the delivered tokens are billed', async () => {
    const { tenantId, key } = await client();
    upstream.answer = () => chunks(['one', ' two'], undefined, [{ delayMs: 20 }, { fail: 'reset' }]);
    // Read raw: the SDK would throw on the error chunk, but under msw's loopback pass-through its
    // cancel of the body never settles.
    const response = await fetch(`${server.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'cheap',
        messages: [{ role: 'user', content: 'abcd' }],
        max_tokens: 10,
        stream: true,
      }),
    });
    const data = (await response.text())
      .split('\n')
      .filter((line) => line.startsWith('data: '))
      .map((line) => line.slice(6));
    expect(data.at(-1)).not.toBe('[DONE]');
    expect(JSON.parse(data.at(-1) ?? '{}')).toMatchObject({ error: { code: 'upstream_unavailable' } });
    const content = data
      .slice(0, -1)
      .map(
        (line) =>
          (JSON.parse(line) as { choices: { delta: { content?: string } }[] }).choices[0]?.delta.content,
      )
      .join('');
    expect(content).toBe('one two');
    // "user: abcd" is 10 characters: 3 prompt tokens by the estimate, plus the 2 delivered.
    expect((await harness.services.store.snapshot(tenantId)).committedMicro).toBe(costMicro('cheap', 3 + 2));
  });

  it('routes a pool the tier may not use to the best allowed one and records the decision', async () => {
    const { tenantId, openai } = await client(2);
    const completion = await openai.chat.completions.create({
      model: 'gpt-4o', // an alias of `reasoning`, which tiers 1–3 may not use
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 5,
    });
    expect(completion.model).toBe('standard');
    const { eq } = await import('drizzle-orm');
    await expect
      .poll(async () => harness.db.select().from(poolDecisions).where(eq(poolDecisions.tenantId, tenantId)))
      .toMatchObject([{ requested: 'gpt-4o', actual: 'standard', reason: 'tier' }]);
  });
});
