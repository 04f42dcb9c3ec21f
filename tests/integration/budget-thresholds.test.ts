import { HttpResponse, http } from 'msw';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BudgetThresholdEvent } from '../../src/budget/thresholds.js';
import type { Clock } from '../../src/clock.js';
import { estimate } from '../../src/inference/estimate.js';
import { createKey } from '../../src/keys/keys.js';
import { silentLogger } from '../../src/observability/logger.js';
import { DEFAULT_PRICES } from '../../src/pricing/pricing.js';
import { memoryStore, periodOf, type Store } from '../../src/store/index.js';
import { createTenant, updateTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness, type HarnessOptions, type LogRecord } from '../support/harness.js';
import { mockNetwork, sseBody } from '../support/msw.js';
import { events, infer, type SseEvent } from '../support/sse.js';

/**
 * Budget threshold events (issue 6): when a scope reaches 80 % and 100 %, one event per threshold
 * per period — a log line and an in-process event — however many requests and instances race.
 *
 * The upstream (msw, OpenAI-compatible) counts a prompt at the gateway's upper bound and the
 * completion at max_tokens, so each request is charged exactly its reservation and a cap can be
 * reached exactly.
 */
const UPSTREAM = 'http://models.test/v1';
const network = mockNetwork(
  http.post(`${UPSTREAM}/chat/completions`, async ({ request }) => {
    const body = (await request.json()) as { max_tokens: number; messages: { content: string }[] };
    const prompt = body.messages[0]?.content ?? '';
    const usage = {
      prompt_tokens: estimate('standard', prompt, body.max_tokens, DEFAULT_PRICES).maxPromptTokens,
      completion_tokens: body.max_tokens,
    };
    const chunk = (value: object) => ({ data: JSON.stringify(value) });
    return new HttpResponse(
      sseBody([
        ...Array.from({ length: body.max_tokens }, (_, i) =>
          chunk({ choices: [{ delta: { content: `t${i}` } }] }),
        ),
        chunk({ choices: [], usage }),
        { data: '[DONE]' },
      ]),
      { headers: { 'content-type': 'text/event-stream' } },
    );
  }),
);
afterAll(() => network.close());

function harnessWith(options: HarnessOptions = {}): Promise<Harness> {
  return createHarness({ ...options, config: { upstream: 'openai', upstreamUrl: UPSTREAM } });
}

/** A clock the test moves (to the next month). */
function manualClock(startMs: number): Clock & { set(ms: number): void } {
  let now = startMs;
  return {
    now: () => now,
    set: (ms) => {
      now = ms;
    },
  };
}

let users = 0;
/**
 * `count` requests at once, spread over the instances, each costing exactly 50 µ: 28 prompt tokens
 * ("abcd" at its bound) + 22 completion tokens at 1 µ on the standard pool (the reservation is the
 * same 50 µ, so a cap is reached exactly). Distinct users, so only the budget can refuse.
 */
async function paidRequests(instances: Harness[], key: string, count: number): Promise<SseEvent[]> {
  const responses = await Promise.all(
    Array.from({ length: count }, (_, i) => {
      users += 1;
      const harness = instances[i % instances.length] as Harness;
      return infer(harness, key, { prompt: 'abcd', max_tokens: 22, user: `u${users}` });
    }),
  );
  expect(responses.map((response) => response.status)).toEqual(responses.map(() => 200));
  const done = await Promise.all(
    responses.map(async (response) => events(await response.text()).at(-1) as SseEvent),
  );
  expect(done.map((event) => event.cost_micro)).toEqual(done.map(() => '50'));
  // The checks run off the request path: wait for every instance's to finish.
  await Promise.all(instances.map((harness) => harness.services.budgetThresholds.idle()));
  return done;
}

function thresholdLines(instances: Harness[]): LogRecord[] {
  return instances.flatMap((harness) =>
    harness.logs.filter((line) => line.msg === 'budget threshold crossed'),
  );
}

async function fundedTenant(harness: Harness, creditMicro: bigint, tier = 7): Promise<string> {
  const tenant = await createTenant(harness.services, { name: 'Thresholds', tier });
  await harness.services.store.credit({ tenantId: tenant.id, grantId: 'g1', amountMicro: creditMicro });
  return tenant.id;
}

describe('two instances sharing Redis, many concurrent requests (key monthly cap)', () => {
  const start = Date.UTC(2026, 10, 20, 12, 0, 0);
  const clock = manualClock(start);
  let a: Harness;
  let b: Harness;
  const heard: { instance: 'a' | 'b'; event: BudgetThresholdEvent }[] = [];
  beforeAll(async () => {
    a = await harnessWith({ clock });
    b = await harnessWith({ shareWith: a, clock });
    a.services.budgetThresholds.subscribe((event) => void heard.push({ instance: 'a', event }));
    b.services.budgetThresholds.subscribe((event) => void heard.push({ instance: 'b', event }));
  });
  afterAll(async () => {
    await b.close();
    await a.close();
  });

  it('emits 80 % once, then 100 % once, nothing more in the month, and again in the next month', async () => {
    // Credits far above the cap: only the key's monthly cap of 2,500 µ has thresholds in reach.
    const tenantId = await fundedTenant(a, 1_000_000_000n);
    const { id: keyId, key } = await createKey(a.services, tenantId, {
      name: 'capped',
      rpmLimit: 10_000,
      monthlyCapMicro: '2500',
    });
    const both = [a, b];
    const november = periodOf(start);

    // 39 × 50 µ = 1,950 µ: below 80 %.
    await paidRequests(both, key, 39);
    expect(heard).toEqual([]);

    // 6 more at once: 2,250 µ; several finalizes see >= 2,000 µ, on both instances; one event.
    await paidRequests(both, key, 6);
    expect(heard.map(({ event }) => event)).toEqual([
      {
        tenantId,
        keyId,
        scope: 'key_monthly',
        thresholdPercent: 80,
        period: november,
        usedMicro: expect.any(BigInt),
        limitMicro: 2_500n,
      },
    ]);
    const used80 = heard[0]?.event.usedMicro ?? 0n;
    expect(used80 >= 2_000n && used80 <= 2_250n).toBe(true);
    const lines = thresholdLines(both);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 'info',
      tenantId,
      keyId,
      scope: 'key_monthly',
      thresholdPercent: 80,
      period: november,
      usedMicro: used80.toString(),
      limitMicro: '2500',
    });

    // The last 5 at once: exactly 2,500 µ, 100 %; one more event.
    const last = await paidRequests(both, key, 5);
    expect(heard.map(({ event }) => [event.thresholdPercent, event.usedMicro])).toEqual([
      [80, used80],
      [100, 2_500n],
    ]);
    expect(thresholdLines(both)).toHaveLength(2);

    // Nothing more this month: the cap refuses, and checks on either instance find nothing new.
    const refused = await a.request('/api/v1/inference', {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'abcd', max_tokens: 22, user: 'one_more' }),
    });
    expect(refused.status).toBe(402);
    for (const harness of both) {
      expect(
        await harness.services.budgetThresholds.check({
          tenantId,
          keyId,
          reservationId: last[0]?.reservation_id as string,
          tenantMonthlyCapMicro: null,
          keyMonthlyCapMicro: 2_500n,
        }),
      ).toEqual([]);
    }
    expect(heard).toHaveLength(2);

    // December: a new period, so 80 % is reported again (once).
    const december = Date.UTC(2026, 11, 1, 0, 0, 1);
    clock.set(december);
    await paidRequests(both, key, 41);
    expect(heard.slice(2).map(({ event }) => [event.scope, event.thresholdPercent, event.period])).toEqual([
      ['key_monthly', 80, periodOf(december)],
    ]);
    expect(thresholdLines(both)).toHaveLength(3);
    // Each event was heard on exactly one instance (whichever set the marker), never on both.
    expect(heard.filter(({ instance }) => instance === 'a').length).toBe(thresholdLines([a]).length);
  });
});

describe.each(['redis', 'memory'] as const)('balance and tenant monthly cap (%s engine)', (engine) => {
  let harness: Harness;
  const heard: BudgetThresholdEvent[] = [];
  beforeAll(async () => {
    harness = await harnessWith(engine === 'memory' ? { store: memoryStore({ log: silentLogger() }) } : {});
    harness.services.budgetThresholds.subscribe((event) => void heard.push(event));
  });
  afterAll(() => harness.close());

  it('balance: 80 % and 100 % of the credits once each; a top-up starts a new period', async () => {
    heard.length = 0;
    const tenantId = await fundedTenant(harness, 1_000n);
    const { key } = await createKey(harness.services, tenantId, { name: 'k', rpmLimit: 10_000 });
    await paidRequests([harness], key, 15);
    expect(heard).toEqual([]);
    await paidRequests([harness], key, 3);
    expect(heard).toEqual([
      {
        tenantId,
        scope: 'balance',
        thresholdPercent: 80,
        period: 'credited:1000',
        usedMicro: expect.any(BigInt),
        limitMicro: 1_000n,
      },
    ]);
    await paidRequests([harness], key, 2);
    expect(heard.map((event) => [event.thresholdPercent, event.usedMicro])).toEqual([
      [80, heard[0]?.usedMicro],
      [100, 1_000n],
    ]);
    expect(await harness.services.store.snapshot(tenantId)).toMatchObject({ availableMicro: 0n });

    // 1,000 more: 1,000 of 2,000 used (50 %); 12 more requests reach 1,600 (80 %).
    await harness.services.store.credit({ tenantId, grantId: 'g2', amountMicro: 1_000n });
    await paidRequests([harness], key, 11);
    expect(heard).toHaveLength(2);
    await paidRequests([harness], key, 1);
    expect(heard.slice(2)).toEqual([
      {
        tenantId,
        scope: 'balance',
        thresholdPercent: 80,
        period: 'credited:2000',
        usedMicro: 1_600n,
        limitMicro: 2_000n,
      },
    ]);
  });

  it('tenant monthly cap: one event per threshold, without a keyId', async () => {
    heard.length = 0;
    const tenantId = await fundedTenant(harness, 1_000_000_000n);
    await updateTenant(harness.services, { id: tenantId, monthlyCapMicro: '500' });
    const { key } = await createKey(harness.services, tenantId, { name: 'k', rpmLimit: 10_000 });
    await paidRequests([harness], key, 8);
    await paidRequests([harness], key, 2);
    expect(
      heard.map((event) => [event.scope, event.thresholdPercent, event.usedMicro, event.limitMicro]),
    ).toEqual([
      ['tenant_monthly', 80, 400n, 500n],
      ['tenant_monthly', 100, 500n, 500n],
    ]);
    expect(heard.every((event) => event.keyId === undefined)).toBe(true);
  });

  it('free (sandbox) requests never trigger a check', async () => {
    heard.length = 0;
    const tenantId = await fundedTenant(harness, 1n);
    const { key } = await createKey(harness.services, tenantId, { name: 'try', sandbox: true });
    const response = await harness.request('/api/v1/inference', {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'abcd', max_tokens: 5 }),
    });
    expect(events(await response.text()).at(-1)).toMatchObject({ type: 'done', cost_micro: '0' });
    await harness.services.budgetThresholds.idle();
    expect(heard).toEqual([]);
  });
});

describe('the check stays off the request path', () => {
  async function withStore(budgetEvent: Store['budgetEvent'], creditMicro = 60n) {
    const base = memoryStore({ log: silentLogger() });
    const harness = await harnessWith({ store: { ...base, budgetEvent } });
    // 60 µ: the 50 µ reservation takes the balance past 80 %, so its settlement is checked.
    const tenantId = await fundedTenant(harness, creditMicro);
    const { key } = await createKey(harness.services, tenantId, { name: 'k', rpmLimit: 10_000 });
    return { harness, key };
  }

  it('a request whose admission left every scope under 80 % makes no threshold check', async () => {
    let checks = 0;
    const { harness, key } = await withStore(async () => {
      checks += 1;
      return { status: 'THRESHOLDS', reached: [] };
    }, 1_000n);
    try {
      expect(await paidRequestsNoIdle(harness, key)).toMatchObject({ type: 'done', cost_micro: '50' });
      await harness.services.budgetThresholds.idle();
      expect(checks).toBe(0);
    } finally {
      await harness.close();
    }
  });

  it('a check that never answers does not hold back the done event', async () => {
    let started = 0;
    // Answers only when the test lets it (after the done event), so shutdown can wait for it.
    let answer: () => void = () => undefined;
    const { harness, key } = await withStore(() => {
      started += 1;
      return new Promise((resolve) => {
        answer = () => resolve({ status: 'THRESHOLDS', reached: [] });
      });
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const done = await Promise.race([
        paidRequestsNoIdle(harness, key),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error('done event held back')), 5_000);
        }),
      ]);
      expect(done).toMatchObject({ type: 'done', cost_micro: '50' });
      expect(started).toBe(1);
    } finally {
      clearTimeout(timer);
      answer();
      await harness.close();
    }
  });

  it('a failing check is logged, never thrown into the request; a failing subscriber spares the others', async () => {
    const { harness, key } = await withStore(async () => {
      throw new Error('store blinked');
    });
    try {
      expect(await paidRequestsNoIdle(harness, key)).toMatchObject({ type: 'done', cost_micro: '50' });
      await harness.services.budgetThresholds.idle();
      expect(harness.logs.filter((line) => line.msg === 'budget threshold check failed')).toHaveLength(1);
    } finally {
      await harness.close();
    }

    const healthy = await harnessWith({ store: memoryStore({ log: silentLogger() }) });
    try {
      const tenantId = await fundedTenant(healthy, 50n);
      const { key: healthyKey } = await createKey(healthy.services, tenantId, { name: 'k' });
      const heard: BudgetThresholdEvent[] = [];
      healthy.services.budgetThresholds.subscribe(() => {
        throw new Error('subscriber bug');
      });
      const unsubscribe = healthy.services.budgetThresholds.subscribe((event) => void heard.push(event));
      expect(await paidRequestsNoIdle(healthy, healthyKey)).toMatchObject({ cost_micro: '50' });
      await healthy.services.budgetThresholds.idle();
      expect(heard.map((event) => event.thresholdPercent)).toEqual([80, 100]);
      expect(healthy.logs.filter((line) => line.msg === 'budget threshold subscriber failed')).toHaveLength(
        2,
      );
      unsubscribe();
      await healthy.services.store.credit({ tenantId, grantId: 'g2', amountMicro: 50n });
      await paidRequestsNoIdle(healthy, healthyKey);
      await healthy.services.budgetThresholds.idle();
      // The top-up is a new balance period: 100 of 100 µ reaches both thresholds again, logged
      // but no longer heard by the unsubscribed listener.
      expect(heard).toHaveLength(2);
      expect(thresholdLines([healthy])).toHaveLength(4);
    } finally {
      await healthy.close();
    }
  });
});

/** One 50 µ request, read to its done event, without waiting for the threshold checks. */
async function paidRequestsNoIdle(harness: Harness, key: string): Promise<SseEvent | undefined> {
  users += 1;
  const response = await harness.request('/api/v1/inference', {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'abcd', max_tokens: 22, user: `u${users}` }),
  });
  expect(response.status).toBe(200);
  return events(await response.text()).at(-1);
}
