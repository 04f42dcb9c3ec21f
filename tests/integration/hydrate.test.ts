import { eq, sql } from 'drizzle-orm';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spend } from '../../db/schema/index.js';
import type { Grant } from '../../src/billing/credits.js';
import { createKey } from '../../src/keys/keys.js';
import { hydrateFromBook } from '../../src/ledger/hydrate.js';
import { accountBalance, accounts } from '../../src/ledger/journal.js';
import { silentLogger } from '../../src/observability/logger.js';
import { memoryStore, redisStore } from '../../src/store/index.js';
import { periodOf, tenantKey } from '../../src/store/typed-store.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, createHarnessOnOwnRedis, type Harness } from '../support/harness.js';
import type { RedisServer } from '../support/redis-server.js';
import { events, infer } from '../support/sse.js';
import { data, trpc } from '../support/trpc.js';

/**
 * The store's balances are rebuilt from the book (PostgreSQL) when the store lost them: admit and
 * credit answer HYDRATE, the gateway hydrates from the book and asks again (docs/ledger.md).
 */

async function tenant(harness: Harness): Promise<string> {
  return (await createTenant(harness.services, { name: 'Hydrate', tier: 4 })).id;
}

function grant(harness: Harness, tenantId: string, grantId: string, amountMicro: bigint) {
  return trpc(
    harness,
    harness.adminToken,
    'admin.credits.grant',
    { tenantId, grantId, amountMicro: amountMicro.toString(), reason: 'test' },
    'POST',
  );
}

async function paidKey(harness: Harness, tenantId: string): Promise<string> {
  return (await createKey(harness.services, tenantId, { name: 'live' })).key;
}

/** One streamed request, read to its end: its HTTP status (and, when 200, the settled charge). */
async function request(harness: Harness, key: string): Promise<{ status: number; code?: string }> {
  const response = await infer(harness, key, { prompt: 'hello world', max_tokens: 10 });
  if (response.status !== 200) {
    const body = (await response.json()) as { error: { code: string } };
    return { status: response.status, code: body.error.code };
  }
  expect(events(await response.text()).at(-1)?.type).toBe('done');
  return { status: 200 };
}

/** Every charge of the tenant so far, from its spend rows (written once the recorder flushed). */
async function charged(harness: Harness, tenantId: string): Promise<bigint> {
  const [row] = await harness.db
    .select({
      total: sql<string>`coalesce(sum(${spend.costMicro}) filter (where not ${spend.free} and ${spend.settled}), 0)::text`,
    })
    .from(spend)
    .where(eq(spend.tenantId, tenantId));
  return BigInt(row?.total ?? '0');
}

describe('on Redis', () => {
  let harness: Harness & { redis: RedisServer };
  let raw: Redis;
  beforeAll(async () => {
    harness = await createHarnessOnOwnRedis({ config: { localModelTokens: 20 } });
    raw = new Redis(harness.redis.url);
  });
  afterAll(async () => {
    raw.disconnect();
    await harness.close();
  });

  it('after FLUSHALL the next request is admitted against the balance rebuilt from the book, to the micro-credit', async () => {
    const tenantId = await tenant(harness);
    expect(data<Grant>(await grant(harness, tenantId, 'flush-g1', 1_000_000n)).alreadyApplied).toBe(false);
    const key = await paidKey(harness, tenantId);
    for (let i = 0; i < 3; i += 1) expect((await request(harness, key)).status).toBe(200);
    // Every charge is in the book before the store loses its data.
    await harness.services.spend.flush();
    const before = await charged(harness, tenantId);
    expect(before).toBeGreaterThan(0n);

    await raw.flushall();
    expect((await harness.services.store.snapshot(tenantId)).creditedMicro).toBe(0n);

    expect((await request(harness, key)).status).toBe(200);
    await harness.services.spend.flush();
    const all = await charged(harness, tenantId);
    expect(all).toBeGreaterThan(before);
    expect(await harness.services.store.snapshot(tenantId)).toEqual({
      creditedMicro: 1_000_000n,
      committedMicro: all,
      reservedMicro: 0n,
      availableMicro: 1_000_000n - all,
      outboxMicro: 0n,
      present: true,
    });
    expect(await accountBalance(harness.db, accounts.available(tenantId))).toBe(1_000_000n - all);
  });

  it('after FLUSHALL billing.balance shows the balance rebuilt from the book, not 0', async () => {
    const tenantId = await tenant(harness);
    await grant(harness, tenantId, 'read-g1', 700_000n);
    const key = await paidKey(harness, tenantId);
    expect((await request(harness, key)).status).toBe(200);
    await harness.services.spend.flush();
    const spent = await charged(harness, tenantId);

    await raw.flushall();
    const balance = data<{ creditedMicro: string; committedMicro: string; availableMicro: string }>(
      await trpc(harness, harness.adminToken, 'billing.balance', { tenantId }),
    );
    expect(balance).toEqual({
      creditedMicro: '700000',
      committedMicro: spent.toString(),
      reservedMicro: '0',
      availableMicro: (700_000n - spent).toString(),
    });
  });

  it('after FLUSHALL the monthly cap counters are rebuilt from the settled charges of the month', async () => {
    const tenantId = await tenant(harness);
    await grant(harness, tenantId, 'month-g1', 1_000_000n);
    const { id: keyId, key } = await createKey(harness.services, tenantId, { name: 'capped' });
    for (let i = 0; i < 2; i += 1) expect((await request(harness, key)).status).toBe(200);
    await harness.services.spend.flush();

    await raw.flushall();
    expect((await request(harness, key)).status).toBe(200);
    await harness.services.spend.flush();
    const all = await charged(harness, tenantId);
    const period = periodOf(harness.services.clock.now());
    // The two charges before the flush are rebuilt; the third is added by its own settlement.
    for (const counter of [`:m:${period}`, `:km:${keyId}:${period}`]) {
      expect(await raw.hgetall(`${tenantKey(tenantId)}${counter}`)).toEqual({
        committed: all.toString(),
        reserved: '0',
      });
    }
  });

  it('replaying a grantId after FLUSHALL answers alreadyApplied and credits nothing twice', async () => {
    const tenantId = await tenant(harness);
    await grant(harness, tenantId, 'replay-g1', 1_000_000n);
    await grant(harness, tenantId, 'replay-g2', 2_000_000n);

    await raw.flushall();
    const replay = await grant(harness, tenantId, 'replay-g1', 1_000_000n);
    expect(data<Grant>(replay)).toMatchObject({
      alreadyApplied: true,
      creditedMicro: '3000000',
      availableMicro: '3000000',
    });
    expect(data<Grant>(await grant(harness, tenantId, 'replay-g2', 2_000_000n)).alreadyApplied).toBe(true);
    expect((await harness.services.store.snapshot(tenantId)).creditedMicro).toBe(3_000_000n);
    expect(await accountBalance(harness.db, accounts.available(tenantId))).toBe(3_000_000n);
    // A new grant after the rebuild is applied on top of it.
    expect(data<Grant>(await grant(harness, tenantId, 'replay-g3', 500n))).toMatchObject({
      alreadyApplied: false,
      creditedMicro: '3000500',
    });
  });

  it('a tenant with no credits at all after FLUSHALL is refused (402), its balance rebuilt as 0', async () => {
    const tenantId = await tenant(harness);
    const key = await paidKey(harness, tenantId);
    await raw.flushall();
    expect(await request(harness, key)).toEqual({ status: 402, code: 'budget_exceeded' });
    // Refused against a balance of 0 that the book rebuilt, not against an absent one.
    expect(await raw.hgetall(`${tenantKey(tenantId)}:bal`)).toEqual({
      credited: '0',
      committed: '0',
      reserved: '0',
    });
    expect(await request(harness, key)).toEqual({ status: 402, code: 'budget_exceeded' });
  });

  it('two instances meeting an empty store hydrate it once; the figures stay exact', async () => {
    const other = await createHarness({
      shareWith: harness,
      config: { localModelTokens: 20 },
      store: redisStore({ url: harness.redis.url, log: silentLogger() }),
    });
    try {
      const tenantId = await tenant(harness);
      await grant(harness, tenantId, 'two-g1', 1_000_000n);
      const key = await paidKey(harness, tenantId);
      expect((await request(other, key)).status).toBe(200);
      await other.services.spend.flush();

      await raw.flushall();
      const results = await Promise.all([
        hydrateFromBook(harness.services, tenantId),
        hydrateFromBook(other.services, tenantId),
      ]);
      expect(results.map((result) => result.status).sort()).toEqual(['ALREADY_PRESENT', 'HYDRATED']);

      await raw.flushall();
      const statuses = await Promise.all(
        [harness, other, harness, other].map(async (instance) => (await request(instance, key)).status),
      );
      expect(statuses).toEqual([200, 200, 200, 200]);
      await Promise.all([harness.services.spend.flush(), other.services.spend.flush()]);
      const all = await charged(harness, tenantId);
      expect(await harness.services.store.snapshot(tenantId)).toEqual({
        creditedMicro: 1_000_000n,
        committedMicro: all,
        reservedMicro: 0n,
        availableMicro: 1_000_000n - all,
        outboxMicro: 0n,
        present: true,
      });
    } finally {
      await other.close();
    }
  });
});

describe('on the embedded memory engine', () => {
  it('a restart starts with an empty store and rebuilds each balance from the book', async () => {
    const first = await createHarness({
      config: { localModelTokens: 20 },
      store: memoryStore({ log: silentLogger() }),
    });
    // The second instance shares the database, not the in-process store: a restarted gateway.
    const restarted = await createHarness({
      shareWith: first,
      config: { localModelTokens: 20 },
      store: memoryStore({ log: silentLogger() }),
    });
    try {
      const tenantId = await tenant(first);
      await grant(first, tenantId, 'mem-g1', 1_000_000n);
      const key = await paidKey(first, tenantId);
      expect((await request(first, key)).status).toBe(200);
      await first.services.spend.flush();
      const before = await charged(first, tenantId);

      expect((await request(restarted, key)).status).toBe(200);
      await restarted.services.spend.flush();
      const all = await charged(first, tenantId);
      expect(all).toBeGreaterThan(before);
      expect(await restarted.services.store.snapshot(tenantId)).toEqual({
        creditedMicro: 1_000_000n,
        committedMicro: all,
        reservedMicro: 0n,
        availableMicro: 1_000_000n - all,
        outboxMicro: 0n,
        present: true,
      });
    } finally {
      await restarted.close();
      await first.close();
    }
  });
});
