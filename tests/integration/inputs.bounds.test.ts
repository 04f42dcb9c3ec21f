import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_AMOUNT_MICRO, MAX_BALANCE_MICRO, MAX_COUNT } from '../../src/budget/bounds.js';
import { parseConfig } from '../../src/config.js';
import { createKey } from '../../src/keys/keys.js';
import { issueCallerToken } from '../../src/signing/tokens.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { MAX_TIER_RATE } from '../../src/tenants/tiers.js';
import { createHarness, type Harness } from '../support/harness.js';
import { events, infer } from '../support/sse.js';
import { data, trpc } from '../support/trpc.js';

/**
 * Every limit the API accepts is one the engine accepts: at its bound it is stored and inference
 * on that key or tenant still works; one past it is a 400 naming the field, and nothing changes.
 */
let harness: Harness;

beforeAll(async () => {
  harness = await createHarness();
});
afterAll(() => harness.close());

const CAP_MAX = MAX_AMOUNT_MICRO.toString();
const CAP_PAST = (MAX_AMOUNT_MICRO + 1n).toString();

/** A tier-4 tenant with credits, a member token for it, and one live key. */
async function tenantWithKey(keyInput: Record<string, unknown> = {}) {
  const tenantId = (await createTenant(harness.services, { name: 'Bounds', tier: 4 })).id;
  await harness.services.store.credit({ tenantId, grantId: 'seed', amountMicro: 1_000_000n });
  const member = (
    await issueCallerToken(harness.services, { role: 'member', tenantId, subject: 'dev', ttlSeconds: 600 })
  ).token;
  const created = await trpc(harness, member, 'keys.create', { name: 'k', ...keyInput }, 'POST');
  return { tenantId, member, created };
}

async function expectInferenceWorks(key: string) {
  const response = await infer(harness, key, { prompt: 'hello', max_tokens: 2 });
  expect(response.status).toBe(200);
  expect(events(await response.text()).at(-1)).toMatchObject({ type: 'done' });
}

function expectRefused(result: Awaited<ReturnType<typeof trpc>>, field: string) {
  expect(result.status).toBe(400);
  expect(result.body.error?.message).toContain(field);
  expect(result.body.error?.data.issues).toEqual([expect.objectContaining({ path: field })]);
}

const KEY_LIMITS = [
  ['rpmLimit', MAX_COUNT, MAX_COUNT + 1],
  ['tpdLimit', MAX_COUNT, MAX_COUNT + 1],
  ['monthlyCapMicro', CAP_MAX, CAP_PAST],
] as const;

describe('keys.create limits', () => {
  it.each(KEY_LIMITS)(
    '%s at the engine bound is accepted and the key then serves inference',
    async (field, max) => {
      const { created } = await tenantWithKey({ [field]: max });
      expect(created.status).toBe(200);
      await expectInferenceWorks(data<{ key: string }>(created).key);
    },
  );

  it.each(KEY_LIMITS)('%s one past the engine bound is a 400 naming the field', async (field, _, past) => {
    const { member, created } = await tenantWithKey({ [field]: past });
    expectRefused(created, field);
    expect(data<unknown[]>(await trpc(harness, member, 'keys.list'))).toHaveLength(0);
  });

  it('a member cannot set the cap of issue 12 (2^52), which the engine refuses', async () => {
    expectRefused((await tenantWithKey({ monthlyCapMicro: '4503599627370496' })).created, 'monthlyCapMicro');
  });
});

describe('keys.update limits', () => {
  it.each(KEY_LIMITS)(
    '%s at the engine bound is accepted and the key then serves inference',
    async (field, max) => {
      const { member, created } = await tenantWithKey();
      const { id, key } = data<{ id: string; key: string }>(created);
      expect((await trpc(harness, member, 'keys.update', { id, [field]: max }, 'POST')).status).toBe(200);
      await expectInferenceWorks(key);
    },
  );

  it.each(KEY_LIMITS)('%s one past the engine bound is a 400 naming the field', async (field, _, past) => {
    const { member, created } = await tenantWithKey();
    const { id, key } = data<{ id: string; key: string }>(created);
    expectRefused(await trpc(harness, member, 'keys.update', { id, [field]: past }, 'POST'), field);
    const [view] = data<Record<string, unknown>[]>(await trpc(harness, member, 'keys.list'));
    expect(view?.[field]).toBe(field === 'rpmLimit' ? 60 : null);
    await expectInferenceWorks(key);
  });
});

describe('admin.tenants.update monthlyCapMicro', () => {
  it('at the engine bound is accepted and the tenant then serves inference', async () => {
    const { tenantId, created } = await tenantWithKey();
    const update = { id: tenantId, monthlyCapMicro: CAP_MAX };
    expect((await trpc(harness, harness.adminToken, 'admin.tenants.update', update, 'POST')).status).toBe(
      200,
    );
    await expectInferenceWorks(data<{ key: string }>(created).key);
  });

  it.each([CAP_PAST, '9999999999999999'])(
    '%s is a 400 naming the field, and the tenant keeps working',
    async (cap) => {
      const { tenantId, created } = await tenantWithKey();
      const update = { id: tenantId, monthlyCapMicro: cap };
      expectRefused(
        await trpc(harness, harness.adminToken, 'admin.tenants.update', update, 'POST'),
        'monthlyCapMicro',
      );
      const tenant = await trpc(harness, harness.adminToken, 'admin.tenants.get', { id: tenantId });
      expect(data<{ monthlyCapMicro: string | null }>(tenant).monthlyCapMicro).toBeNull();
      await expectInferenceWorks(data<{ key: string }>(created).key);
    },
  );
});

describe('admin.credits.grant amountMicro', () => {
  const grant = (tenantId: string, amountMicro: string) =>
    trpc(
      harness,
      harness.adminToken,
      'admin.credits.grant',
      { tenantId, amountMicro, reason: 'bounds' },
      'POST',
    );

  it('one past the engine bound is a 400 naming the field', async () => {
    const { tenantId } = await tenantWithKey();
    expectRefused(await grant(tenantId, CAP_PAST), 'amountMicro');
  });

  it('grants summed up to the balance ceiling are accepted and inference then works; one more is a 400', async () => {
    const { tenantId, created } = await tenantWithKey();
    // The seed grant of tenantWithKey (1,000,000 µ) counts towards the ceiling too.
    let credited = 1_000_000n;
    while (credited + MAX_AMOUNT_MICRO <= MAX_BALANCE_MICRO) {
      expect((await grant(tenantId, CAP_MAX)).status).toBe(200);
      credited += MAX_AMOUNT_MICRO;
    }
    const last = await grant(tenantId, (MAX_BALANCE_MICRO - credited).toString());
    expect(data<{ creditedMicro: string }>(last).creditedMicro).toBe(MAX_BALANCE_MICRO.toString());
    await expectInferenceWorks(data<{ key: string }>(created).key);

    const past = await grant(tenantId, '1');
    expect(past.status).toBe(400);
    expect(past.body.error?.message).toContain('past its maximum');
    const balance = await trpc(harness, harness.adminToken, 'billing.balance', { tenantId });
    expect(data<{ creditedMicro: string }>(balance).creditedMicro).toBe(MAX_BALANCE_MICRO.toString());
    await expectInferenceWorks(data<{ key: string }>(created).key);
  });
});

describe('TIERS at its bound', () => {
  it('tier rates of MAX_TIER_RATE start up and serve inference', async () => {
    const limits = { tenantRpm: MAX_TIER_RATE, userRpm: MAX_TIER_RATE, channelRpm: MAX_TIER_RATE };
    const parsed = parseConfig({ TIERS: JSON.stringify({ 9: { ...limits, burstCapacity: MAX_TIER_RATE } }) });
    if (!parsed.ok) throw new Error(parsed.message);
    const tiered = await createHarness({ config: { tiers: parsed.config.tiers } });
    try {
      const tenantId = (await createTenant(tiered.services, { name: 'Top tier', tier: 9 })).id;
      await tiered.services.store.credit({ tenantId, grantId: 'seed', amountMicro: 1_000_000n });
      const { key } = await createKey(tiered.services, tenantId, { name: 'k' });
      const response = await infer(tiered, key, {
        prompt: 'hello',
        max_tokens: 2,
        user: 'u1',
        channel: 'c1',
      });
      expect(response.status).toBe(200);
      expect(events(await response.text()).at(-1)).toMatchObject({ type: 'done' });
    } finally {
      await tiered.close();
    }
  });
});
