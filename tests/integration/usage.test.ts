import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spend } from '../../db/schema/index.js';
import { grantCredits } from '../../src/billing/credits.js';
import { createKey } from '../../src/keys/keys.js';
import { accountBalance, accounts } from '../../src/ledger/journal.js';
import { writeSettledSpend } from '../../src/ledger/outbox.js';
import { issueToken } from '../../src/signing/caller-tokens.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { spicegateCli } from '../support/cli.js';
import { createHarness, type Harness } from '../support/harness.js';
import { serve } from '../support/serve.js';
import { events, infer } from '../support/sse.js';
import { data, trpc } from '../support/trpc.js';

/**
 * admin.usage, billing.usage and admin.poolDecisions read back real traffic: requests through the
 * whole app on a fake clock over three UTC days, settled by the engine into the spend table.
 */
const DAY_MS = 86_400_000;
const DAY1 = Date.parse('2026-05-01T00:00:00.000Z');
/** Where the clock stands for every read: the third day, 18:00 UTC. */
const QUERY_AT = DAY1 + 2 * DAY_MS + 18 * 3_600_000;
// The local model answers 40 tokens and reports 2 prompt tokens for "abcdefgh": 42 tokens a request.
/** 42 tokens at cheap's 200 µ per 1k, rounded up. */
const CHEAP = 9;
/** 42 tokens at standard's 1,000 µ per 1k, rounded up. */
const STANDARD = 42;
// Nine charged requests: 5 cheap (45 µ) and 4 standard (168 µ), 213 µ in all.
const TOTAL = 5 * CHEAP + 4 * STANDARD;
/** Three times the traffic's cost: 2 × TOTAL is left, 14 days at TOTAL a week. */
const GRANT = 3 * TOTAL;

let nowMs = DAY1 + 9 * 3_600_000;
let harness: Harness;
let tenantId: string;
let other: string;
let downgraded: string;
const keys = { k1: '', k2: '', k3: '' };
const keyIds = { k1: '', k2: '', k3: '' };

async function send(key: string, pool: string, extra: { user?: string; channel?: string } = {}) {
  const response = await infer(harness, key, { prompt: 'abcdefgh', max_tokens: 40, pool, ...extra });
  const done = events(await response.text()).at(-1);
  expect(done?.type, JSON.stringify(done)).toBe('done');
  return done;
}

beforeAll(async () => {
  harness = await createHarness({ config: { localModelTokens: 40 }, clock: { now: () => nowMs } });
  tenantId = (await createTenant(harness.services, { name: 'Usage', tier: 4 })).id;
  other = (await createTenant(harness.services, { name: 'Other', tier: 4 })).id;
  downgraded = (await createTenant(harness.services, { name: 'Tier one', tier: 1 })).id;
  for (const id of [tenantId, other, downgraded])
    await grantCredits(harness.services, {
      tenantId: id,
      amountMicro: BigInt(GRANT),
      reason: 'usage',
      grantedBy: 'test',
    });
  for (const name of ['k1', 'k2', 'k3'] as const) {
    const created = await createKey(harness.services, tenantId, { name });
    keys[name] = created.key;
    keyIds[name] = created.id;
  }
  const sandbox = (await createKey(harness.services, tenantId, { name: 'sandbox', sandbox: true })).key;
  const otherKey = (await createKey(harness.services, other, { name: 'other' })).key;
  const tierOneKey = (await createKey(harness.services, downgraded, { name: 'tier one' })).key;

  // [day, key, pool, user, channel]
  const traffic: [number, keyof typeof keys, string, (string | undefined)?, string?][] = [
    [0, 'k1', 'cheap', 'u1'],
    [0, 'k1', 'standard', 'u2'],
    [0, 'k2', 'cheap', 'u1'],
    [1, 'k2', 'standard', 'u2'],
    [1, 'k3', 'cheap'],
    [1, 'k1', 'standard', 'u1'],
    [2, 'k3', 'cheap', 'u2'],
    [2, 'k2', 'standard', 'u1'],
    [2, 'k1', 'cheap', undefined, 'ch1'],
  ];
  for (const [index, [day, key, pool, user, channel]] of traffic.entries()) {
    nowMs = DAY1 + day * DAY_MS + 10 * 3_600_000 + index * 60_000;
    const done = await send(keys[key], pool, {
      ...(user === undefined ? {} : { user }),
      ...(channel === undefined ? {} : { channel }),
    });
    expect(done?.cost_micro).toBe(String(pool === 'cheap' ? CHEAP : STANDARD));
  }
  // Never counted: a sandbox (free) request, and another tenant's.
  await send(sandbox, 'cheap', { user: 'u1' });
  await send(otherKey, 'standard', { user: 'u1' });
  // A tier-1 tenant asking for flagship is served by standard: a pool decision.
  await send(tierOneKey, 'flagship', { user: 'u9' });
  nowMs = QUERY_AT;
  await harness.services.spend.flush();
});
afterAll(() => harness.close());

const token = async (role: 'admin' | 'operator' | 'member', tenant?: string) =>
  (await issueToken(harness.services, { role, ...(tenant === undefined ? {} : { tenantId: tenant }) })).token;

const line = (requests: number, costMicro: number) => ({ requests, costMicro: String(costMicro) });

describe('admin.usage', () => {
  it('sums the known traffic exactly per day and pool, per pool, per key and per user', async () => {
    const result = await trpc(harness, await token('admin'), 'admin.usage', { tenantId });
    expect(result.status).toBe(200);
    expect(data(result)).toMatchObject({
      tenantId,
      // The default window: the last 30 UTC days up to the end of the clock's day.
      from: new Date(DAY1 + 3 * DAY_MS - 30 * DAY_MS).toISOString(),
      to: new Date(DAY1 + 3 * DAY_MS).toISOString(),
      asOf: new Date(QUERY_AT).toISOString(),
      groupBy: ['day', 'pool', 'key', 'user'],
      requests: 9,
      totalMicro: String(TOTAL),
      days: [
        { date: '2026-05-01', pool: 'cheap', ...line(2, 2 * CHEAP) },
        { date: '2026-05-01', pool: 'standard', ...line(1, STANDARD) },
        { date: '2026-05-02', pool: 'cheap', ...line(1, CHEAP) },
        { date: '2026-05-02', pool: 'standard', ...line(2, 2 * STANDARD) },
        { date: '2026-05-03', pool: 'cheap', ...line(2, 2 * CHEAP) },
        { date: '2026-05-03', pool: 'standard', ...line(1, STANDARD) },
      ],
      pools: [
        { pool: 'cheap', ...line(5, 5 * CHEAP) },
        { pool: 'standard', ...line(4, 4 * STANDARD) },
      ],
      keys: [
        { keyId: keyIds.k1, ...line(4, 2 * CHEAP + 2 * STANDARD) },
        { keyId: keyIds.k2, ...line(3, CHEAP + 2 * STANDARD) },
        { keyId: keyIds.k3, ...line(2, 2 * CHEAP) },
      ].sort((a, b) => (a.keyId < b.keyId ? -1 : 1)),
      users: [
        { userId: 'u1', ...line(4, 2 * CHEAP + 2 * STANDARD) },
        { userId: 'u2', ...line(3, CHEAP + 2 * STANDARD) },
        // Requests that named no user, last.
        { userId: null, ...line(2, 2 * CHEAP) },
      ],
    });
  });

  it('groupBy returns that one cut with the totals; a window keeps `to` exclusive', async () => {
    const admin = await token('admin');
    const users = data<Record<string, unknown>>(
      await trpc(harness, admin, 'admin.usage', {
        tenantId,
        groupBy: 'user',
        from: '2026-05-02',
        to: '2026-05-03',
      }),
    );
    expect(users).toMatchObject({
      groupBy: ['user'],
      requests: 3,
      totalMicro: String(CHEAP + 2 * STANDARD),
      users: [
        { userId: 'u1', ...line(1, STANDARD) },
        { userId: 'u2', ...line(1, STANDARD) },
        { userId: null, ...line(1, CHEAP) },
      ],
    });
    expect(Object.keys(users)).not.toContain('days');
    expect(Object.keys(users)).not.toContain('pools');
    expect(Object.keys(users)).not.toContain('keys');
  });

  it('projects depletion at the last 7 days’ rate: 2 × TOTAL left at TOTAL a week is 14 days away', async () => {
    const result = data<{ projection: unknown }>(
      await trpc(harness, await token('operator'), 'admin.usage', { tenantId, groupBy: 'pool' }),
    );
    expect(result.projection).toEqual({
      availableMicro: String(GRANT - TOTAL),
      last7DaysMicro: String(TOTAL),
      dailyRateMicro: String(Math.floor(TOTAL / 7)),
      depletesAt: new Date(QUERY_AT + 14 * DAY_MS).toISOString(),
    });
  });

  it('projects no depletion for a tenant with no charge in the last 7 days', async () => {
    const quiet = (await createTenant(harness.services, { name: 'Quiet', tier: 4 })).id;
    const result = data<{ projection: unknown; requests: number }>(
      await trpc(harness, await token('admin'), 'admin.usage', { tenantId: quiet }),
    );
    expect(result.requests).toBe(0);
    expect(result.projection).toEqual({
      availableMicro: '0',
      last7DaysMicro: '0',
      dailyRateMicro: '0',
      depletesAt: null,
    });
  });

  it('is for admins and operators: a member gets FORBIDDEN, no token 401', async () => {
    const member = await token('member', tenantId);
    for (const path of ['admin.usage', 'admin.poolDecisions']) {
      const refused = await trpc(harness, member, path, { tenantId });
      expect(refused.status, path).toBe(403);
      expect(refused.body.error?.data).toMatchObject({ code: 'FORBIDDEN' });
      expect((await trpc(harness, undefined, path, { tenantId })).status, path).toBe(401);
      expect((await trpc(harness, await token('operator'), path, { tenantId })).status, path).toBe(200);
    }
  });

  it.each([
    ['an unknown cut', { groupBy: 'channel' }],
    ['from after to', { from: '2026-05-03', to: '2026-05-01' }],
    ['a date without its zone', { from: '2026-05-01T10:00:00' }],
    ['the year 0000 (not a PostgreSQL date)', { from: '0000-01-01', to: '0000-06-01' }],
  ])('refuses %s with 400', async (_, input) => {
    const result = await trpc(harness, await token('admin'), 'admin.usage', { tenantId, ...input });
    expect(result.status).toBe(400);
  });

  it('names a tenant that does not exist with NOT_FOUND', async () => {
    const result = await trpc(harness, await token('admin'), 'admin.usage', {
      tenantId: `ten_${'0'.repeat(32)}`,
    });
    expect(result.status).toBe(404);
  });
});

describe('billing.usage', () => {
  it('gives a member for its own tenant exactly what admin.usage gives: every cut and the projection', async () => {
    const own = data<Record<string, unknown>>(
      await trpc(harness, await token('member', tenantId), 'billing.usage'),
    );
    const admin = data<Record<string, unknown>>(
      await trpc(harness, await token('admin'), 'admin.usage', { tenantId }),
    );
    expect(own).toEqual(admin);
    expect(own).toMatchObject({ tenantId, requests: 9, totalMicro: String(TOTAL) });
    expect(Object.keys(own)).toEqual(
      expect.arrayContaining(['days', 'pools', 'keys', 'users', 'projection']),
    );
  });

  it('answers a member naming another tenant NOT_FOUND', async () => {
    const result = await trpc(harness, await token('member', other), 'billing.usage', { tenantId });
    expect(result.status).toBe(404);
    expect(result.body.error?.data).toMatchObject({ code: 'NOT_FOUND' });
  });
});

describe('spend rows carry user and channel', () => {
  it('from the native route (user, channel) and the OpenAI route (user)', async () => {
    // A key of the other tenant: the figures read above stay the known traffic.
    const { key, id } = await createKey(harness.services, other, { name: 'routes' });
    const native = await send(key, 'cheap', { user: 'native-user', channel: 'native-channel' });
    const openai = await harness.request('/v1/chat/completions', {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'cheap',
        messages: [{ role: 'user', content: 'abcdefgh' }],
        max_tokens: 4,
        user: 'openai-user',
      }),
    });
    expect(openai.status).toBe(200);
    await openai.text();
    await harness.services.spend.flush();
    const rows = await harness.db
      .select({ reservationId: spend.reservationId, userId: spend.userId, channelId: spend.channelId })
      .from(spend)
      .where(eq(spend.keyId, id));
    expect(rows).toContainEqual({
      reservationId: native?.reservation_id,
      userId: 'native-user',
      channelId: 'native-channel',
    });
    expect(rows.filter((row) => row.userId === 'openai-user')).toEqual([
      { reservationId: expect.any(String), userId: 'openai-user', channelId: null },
    ]);
  });

  it('a row drained from the outbox has none; an unsettled row settled by it keeps its own', async () => {
    const settled = {
      tenantId: other,
      keyId: 'key_drained',
      pool: 'cheap',
      promptTokens: 1,
      completionTokens: 1,
    };
    await harness.services.spend.unsettled({
      ...settled,
      reservationId: 'res_kept_user',
      userId: 'kept-user',
      channelId: 'kept-channel',
      costMicro: 1n,
      free: false,
    });
    // What the outbox drain writes: the entry carries no user or channel.
    const at = new Date(QUERY_AT - 3 * DAY_MS);
    await writeSettledSpend(harness.db, [
      {
        ...settled,
        reservationId: 'res_kept_user',
        costMicro: 1n,
        chargedMicro: 1n,
        free: false,
        settledAt: at,
      },
      {
        ...settled,
        reservationId: 'res_drained',
        costMicro: 1n,
        chargedMicro: 1n,
        free: false,
        settledAt: at,
      },
    ]);
    const rows = await harness.db
      .select({
        reservationId: spend.reservationId,
        userId: spend.userId,
        channelId: spend.channelId,
        settled: spend.settled,
      })
      .from(spend)
      .where(eq(spend.keyId, 'key_drained'));
    expect(rows.sort((a, b) => (a.reservationId < b.reservationId ? -1 : 1))).toEqual([
      { reservationId: 'res_drained', userId: null, channelId: null, settled: true },
      { reservationId: 'res_kept_user', userId: 'kept-user', channelId: 'kept-channel', settled: true },
    ]);

    // The settling gateway writes its own copy later (its write had failed meanwhile): the drained
    // row takes its user and channel; its charge and the book are untouched.
    const entriesBefore = await accountBalance(harness.db, accounts.spent(other));
    await writeSettledSpend(harness.db, [
      {
        ...settled,
        reservationId: 'res_drained',
        userId: 'late-user',
        channelId: 'late-channel',
        costMicro: 999n,
        chargedMicro: 999n,
        free: false,
        settledAt: new Date(QUERY_AT - 2 * DAY_MS),
      },
    ]);
    const [late] = await harness.db
      .select({ userId: spend.userId, channelId: spend.channelId, costMicro: spend.costMicro })
      .from(spend)
      .where(eq(spend.reservationId, 'res_drained'));
    expect(late).toEqual({ userId: 'late-user', channelId: 'late-channel', costMicro: 1n });
    expect(await accountBalance(harness.db, accounts.spent(other))).toBe(entriesBefore);
  });
});

describe('admin.poolDecisions', () => {
  it('lists the downgrade (requested flagship, used standard, reason tier) and the pools’ utilisation', async () => {
    const result = await trpc(harness, await token('operator'), 'admin.poolDecisions', {
      tenantId: downgraded,
    });
    expect(result.status).toBe(200);
    const report = data<{ decisions: unknown[]; truncated: boolean; utilisation: unknown[] }>(result);
    expect(report.decisions).toEqual([
      {
        reservationId: expect.stringMatching(/^res_/),
        tenantId: downgraded,
        keyId: expect.stringMatching(/^key_/),
        requested: 'flagship',
        actual: 'standard',
        reason: 'tier',
        // The reservation at standard: "abcdefgh" at its bound (8 bytes + the chat template's 24) + 40.
        costMicro: String(8 + 24 + 40),
        createdAt: new Date(DAY1 + 2 * DAY_MS + 10 * 3_600_000 + 8 * 60_000).toISOString(),
      },
    ]);
    expect(report.truncated).toBe(false);
    expect(report.utilisation).toEqual([
      {
        pool: 'flagship',
        requests: 0,
        promptTokens: 0,
        completionTokens: 0,
        costMicro: '0',
        routedIn: 0,
        routedOut: 1,
      },
      {
        pool: 'standard',
        requests: 1,
        promptTokens: 2,
        completionTokens: 40,
        costMicro: String(STANDARD),
        routedIn: 1,
        routedOut: 0,
      },
    ]);
  });

  it('across tenants, filtered by pool: utilisation counts every tenant’s requests in that pool', async () => {
    const report = data<{ decisions: { tenantId: string }[]; utilisation: unknown[] }>(
      await trpc(harness, await token('admin'), 'admin.poolDecisions', { pool: 'standard' }),
    );
    expect(report.decisions.map((row) => row.tenantId)).toEqual([downgraded]);
    // Standard: the tenant's 4, the other tenant's 1, the tier-1 tenant's 1; the drained test rows are cheap.
    expect(report.utilisation).toEqual([
      {
        pool: 'standard',
        requests: 6,
        promptTokens: 12,
        completionTokens: 240,
        costMicro: String(6 * STANDARD),
        routedIn: 1,
        routedOut: 0,
      },
    ]);
  });

  it('refuses a pool that does not exist with 400', async () => {
    const result = await trpc(harness, await token('admin'), 'admin.poolDecisions', { pool: 'gpt-9' });
    expect(result.status).toBe(400);
  });
});

// 60 s: the CLI run builds the bundle (cached) and starts a Node process, seconds on a busy machine.
describe('spicegate usage', { timeout: 60_000 }, () => {
  it('prints the tenant’s usage from a served gateway; no --tenant is a usage error (2)', async () => {
    const server = await serve(harness.app);
    const cli = (args: string[]) => spicegateCli(server.url, harness.adminToken, args);
    try {
      const printed = await cli([
        'usage',
        '--tenant',
        tenantId,
        '--from',
        '2026-05-03',
        '--to',
        '2026-05-04',
      ]);
      expect(printed.code, printed.stderr).toBe(0);
      expect(JSON.parse(printed.stdout)).toMatchObject({
        tenantId,
        from: '2026-05-03T00:00:00.000Z',
        to: '2026-05-04T00:00:00.000Z',
        requests: 3,
        totalMicro: String(2 * CHEAP + STANDARD),
        pools: [
          { pool: 'cheap', ...line(2, 2 * CHEAP) },
          { pool: 'standard', ...line(1, STANDARD) },
        ],
      });
      const missing = await cli(['usage']);
      expect(missing.code).toBe(2);
      expect(missing.stderr).toContain('usage needs --tenant');
    } finally {
      await server.close();
    }
  });
});
