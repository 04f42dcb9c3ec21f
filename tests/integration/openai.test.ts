import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKey } from '../../src/keys/keys.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';
import { serve } from '../support/serve.js';

/** The official `openai` client, pointed at the gateway as a user would. */
let harness: Harness;
let server: { url: string; close(): Promise<void> };

beforeAll(async () => {
  harness = await createHarness({ config: { localModelTokens: 8 } });
  server = await serve(harness.app);
});
afterAll(async () => {
  await server.close();
  await harness.close();
});

async function client(tier: number, creditMicro: bigint) {
  const tenant = await createTenant(harness.services, { name: 'OpenAI user', tier });
  if (creditMicro > 0n)
    await harness.services.store.credit({ tenantId: tenant.id, grantId: 'g', amountMicro: creditMicro });
  const { key } = await createKey(harness.services, tenant.id, { name: 'sdk' });
  return {
    tenantId: tenant.id,
    openai: new OpenAI({ apiKey: key, baseURL: `${server.url}/v1`, maxRetries: 0 }),
  };
}

describe('OpenAI-compatible routes', () => {
  it('lists the pools the key may use as models', async () => {
    const { openai } = await client(2, 1_000n);
    const models = await openai.models.list();
    expect(models.data.map((model) => model.id)).toEqual(['cheap', 'standard']);
  });

  it('answers a non-streaming completion with usage, charging exactly its cost', async () => {
    const { tenantId, openai } = await client(4, 1_000_000n);
    const completion = await openai.chat.completions.create({
      model: 'standard',
      messages: [{ role: 'user', content: 'Say hello' }],
      max_tokens: 5,
    });
    expect(completion.object).toBe('chat.completion');
    expect(completion.choices[0]?.message.content).toBe('tok0 tok1 tok2 tok3 tok4');
    expect(completion.choices[0]?.finish_reason).toBe('length');
    // "user: Say hello" is 15 characters: 4 prompt tokens; 1 µ per token in `standard`.
    expect(completion.usage).toEqual({ prompt_tokens: 4, completion_tokens: 5, total_tokens: 9 });
    expect(await harness.services.store.snapshot(tenantId)).toMatchObject({
      committedMicro: 9n,
      reservedMicro: 0n,
    });
  });

  it('streams chunks and, with include_usage, a final usage chunk', async () => {
    const { tenantId, openai } = await client(4, 1_000_000n);
    const stream = await openai.chat.completions.create({
      model: 'cheap',
      messages: [{ role: 'user', content: 'Stream please' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let content = '';
    let usage: OpenAI.CompletionUsage | undefined;
    let finish: string | null | undefined;
    for await (const chunk of stream) {
      content += chunk.choices[0]?.delta.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(content).toBe('tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7');
    expect(finish).toBe('stop');
    expect(usage).toEqual({ prompt_tokens: 5, completion_tokens: 8, total_tokens: 13 });
    // cheap: 200 µ per 1,000 tokens, rounded up: 13 tokens → 3 µ.
    expect((await harness.services.store.snapshot(tenantId)).committedMicro).toBe(3n);
  });

  it('refuses an unknown model with 404 model_not_found (param "model") before admission; a known pool above the tier is replaced', async () => {
    const tenant = await createTenant(harness.services, { name: 'Typo', tier: 2 });
    await harness.services.store.credit({ tenantId: tenant.id, grantId: 'g', amountMicro: 1_000_000n });
    // One request a minute: a refused request that counted would leave none for the next.
    const { key } = await createKey(harness.services, tenant.id, { name: 'sdk', rpmLimit: 1 });
    const openai = new OpenAI({ apiKey: key, baseURL: `${server.url}/v1`, maxRetries: 0 });
    const error = await openai.chat.completions
      .create({ model: 'nope', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 })
      .catch((thrown: unknown) => thrown);
    expect(error).toBeInstanceOf(OpenAI.NotFoundError);
    expect(error).toMatchObject({
      status: 404,
      code: 'model_not_found',
      param: 'model',
      type: 'invalid_request_error',
      message: expect.stringContaining('`nope`'),
    });
    expect(await harness.services.store.snapshot(tenant.id)).toMatchObject({
      reservedMicro: 0n,
      committedMicro: 0n,
    });
    // `reasoning` exists but tier 2 may not use it: served by the best allowed pool, as before.
    const { data, response } = await openai.chat.completions
      .create({ model: 'reasoning', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 })
      .withResponse();
    expect(data.model).toBe('standard');
    expect(response.headers.get('x-pool-used')).toBe('standard');
  });

  it('takes max_completion_tokens and the deprecated max_tokens; given both, the smaller wins in either order', async () => {
    const { openai } = await client(4, 1_000_000n);
    const completionTokens = async (caps: { max_tokens?: number; max_completion_tokens?: number }) => {
      const completion = await openai.chat.completions.create({
        model: 'cheap',
        messages: [{ role: 'user', content: 'count' }],
        ...caps,
      });
      return completion.usage?.completion_tokens;
    };
    expect(await completionTokens({ max_tokens: 3, max_completion_tokens: 5 })).toBe(3);
    expect(await completionTokens({ max_tokens: 5, max_completion_tokens: 3 })).toBe(3);
    expect(await completionTokens({ max_completion_tokens: 2 })).toBe(2);
    expect(await completionTokens({ max_tokens: 4 })).toBe(4);
  });

  it('refuses n > 1 with 400 in OpenAI’s shape (param "n"); n absent, null or 1 is served', async () => {
    const { tenantId, openai } = await client(4, 1_000_000n);
    const ask = (n: number | null | undefined) =>
      openai.chat.completions.create({
        model: 'cheap',
        messages: [{ role: 'user', content: 'one answer' }],
        max_tokens: 2,
        ...(n === undefined ? {} : { n }),
      });
    const error = await ask(2).catch((thrown: unknown) => thrown);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect(error).toMatchObject({
      status: 400,
      param: 'n',
      type: 'invalid_request_error',
      code: 'invalid_request',
    });
    expect(await harness.services.store.snapshot(tenantId)).toMatchObject({
      reservedMicro: 0n,
      committedMicro: 0n,
    });
    for (const n of [undefined, null, 1]) expect((await ask(n)).choices).toHaveLength(1);
  });

  it('gives OpenAI-shaped errors the client understands (401, 402)', async () => {
    const unknown = new OpenAI({
      apiKey: 'sg_live_AAAAAAAAAAAA_00000000000000000000000000000000',
      baseURL: `${server.url}/v1`,
      maxRetries: 0,
    });
    await expect(unknown.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
    const { openai } = await client(4, 1n);
    const error = await openai.chat.completions
      .create({ model: 'standard', messages: [{ role: 'user', content: 'too expensive' }], max_tokens: 100 })
      .catch((thrown: unknown) => thrown);
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect((error as InstanceType<typeof OpenAI.APIError>).status).toBe(402);
    expect((error as InstanceType<typeof OpenAI.APIError>).code).toBe('budget_exceeded');
  });

  it('answers the same over a Node socket (written into Node’s response) as through the fetch path', async () => {
    const { key } = await (async () => {
      const tenant = await createTenant(harness.services, { name: 'parity', tier: 4 });
      await harness.services.store.credit({ tenantId: tenant.id, grantId: 'g', amountMicro: 1_000_000n });
      return createKey(harness.services, tenant.id, { name: 'parity' });
    })();
    // What differs between two answers by nature: ids, times, counters, and what Node's server adds.
    const varying =
      /^(date|keep-alive|connection|transfer-encoding|content-length|x-request-id|x-ratelimit-.*|ratelimit-.*)$/;
    const shape = async (response: Response) => ({
      status: response.status,
      headers: [...response.headers]
        .map(([name, value]) => (varying.test(name) ? name : `${name}: ${value}`))
        .filter((line) => !/^(date|keep-alive|connection|transfer-encoding|content-length)$/.test(line))
        .sort(),
      body: (await response.text())
        .replace(/chatcmpl-[\w-]+/g, 'chatcmpl-X')
        .replace(/"created":\d+/g, '"created":0'),
    });
    const init = (body: unknown): RequestInit => ({
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const bodies = [
      { model: 'cheap', messages: [{ role: 'user', content: 'whole' }], max_tokens: 3 },
      {
        model: 'cheap',
        messages: [{ role: 'user', content: 'streamed' }],
        max_tokens: 3,
        stream: true,
        stream_options: { include_usage: true },
      },
      { model: 'nope', messages: [{ role: 'user', content: 'unknown model' }] },
    ];
    for (const body of bodies) {
      const viaFetch = await shape(await harness.request('/v1/chat/completions', init(body)));
      const viaNode = await shape(await fetch(`${server.url}/v1/chat/completions`, init(body)));
      expect(viaNode).toEqual(viaFetch);
      expect(viaNode.headers).toContain('x-request-id');
      expect(viaNode.headers).toContain('x-frame-options: DENY');
    }
    const streamed = await shape(await fetch(`${server.url}/v1/chat/completions`, init(bodies[1])));
    expect(streamed.headers).toContain('content-type: text/event-stream');
    expect(streamed.body.endsWith('data: [DONE]\n\n')).toBe(true);
  });
});
