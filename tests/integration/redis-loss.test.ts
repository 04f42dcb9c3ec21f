import { and, eq, sql } from 'drizzle-orm';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { spend } from '../../db/schema/index.js';
import { createKey } from '../../src/keys/keys.js';
import { accountBalance, accounts } from '../../src/ledger/journal.js';
import { drainOutbox } from '../../src/ledger/outbox.js';
import { createLogger } from '../../src/observability/logger.js';
import { createMetrics } from '../../src/observability/metrics.js';
import type { FinalizeResult } from '../../src/store/contracts.js';
import { redisStore, type Store } from '../../src/store/index.js';
import { tenantKey } from '../../src/store/typed-store.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';
import { type RedisServer, startRedisServer } from '../support/redis-server.js';
import { events, infer, type SseEvent } from '../support/sse.js';
import { trpc } from '../support/trpc.js';

/**
 * Issue 14: when Redis loses its data, no charge of a successful request is lost and nothing is
 * admitted without a reservation. A gateway (the harness) on PostgreSQL and a redis-server of this
 * file's own, whose store records what the scripts answered: every admission, every settlement.
 * Streams admitted before the loss reach finalize on an empty store and are billed all the same
 * (RECOVERED, after the balance is rebuilt from the book); rows the process still held reach the
 * book; requests while Redis is down are refused (503) before any token.
 */
let redis: RedisServer;
let harness: Harness;
/** Every reservation id the admit script answered ADMITTED for, and every settlement's status. */
const admitted = new Set<string>();
const settlements: { reservationId: string; status: FinalizeResult['status'] }[] = [];
const storeMetrics = createMetrics();

beforeAll(async () => {
  redis = await startRedisServer();
  const base = redisStore({ url: redis.url, log: createLogger({ level: 'silent' }), metrics: storeMetrics });
  const store: Store = {
    ...base,
    admit: async (input) => {
      const result = await base.admit(input);
      if (result.status === 'ADMITTED') admitted.add(result.reservationId);
      return result;
    },
    finalize: async (input) => {
      const result = await base.finalize(input);
      settlements.push({ reservationId: input.reservationId, status: result.status });
      return result;
    },
  };
  // 20 tokens 50 ms apart: each stream lasts about a second.
  harness = await createHarness({ store, config: { localModelTokens: 20, localModelDelayMs: 50 } });
});
afterAll(async () => {
  await harness?.close();
  await redis?.stop();
});

async function fundedTenant(name: string, amountMicro: bigint): Promise<{ tenantId: string; key: string }> {
  const tenantId = (await createTenant(harness.services, { name, tier: 7 })).id;
  const granted = await trpc(
    harness,
    harness.adminToken,
    'admin.credits.grant',
    { tenantId, amountMicro: amountMicro.toString(), reason: 'redis loss', grantId: `grant-${tenantId}` },
    'POST',
  );
  expect(granted.status).toBe(200);
  const { key } = await createKey(harness.services, tenantId, { name: 'k', rpmLimit: 10_000 });
  return { tenantId, key };
}

/** The tenant's settled spend rows: count and Σ cost; and any row not settled (or parked). */
async function spendRows(tenantId: string) {
  const [row] = await harness.db
    .select({
      settled: sql<string>`count(*) filter (where ${spend.settled})::text`,
      costMicro: sql<string>`coalesce(sum(${spend.costMicro}) filter (where ${spend.settled}), 0)::text`,
      unsettled: sql<string>`count(*) filter (where not ${spend.settled})::text`,
    })
    .from(spend)
    .where(eq(spend.tenantId, tenantId));
  return {
    settled: Number(row?.settled),
    costMicro: BigInt(row?.costMicro ?? '-1'),
    unsettled: Number(row?.unsettled),
  };
}

/** Settles what the store failed to settle, then writes every row held and what the outbox holds. */
async function settleEverything(tenantId: string): Promise<void> {
  await vi.waitFor(
    async () => {
      await harness.services.spend.settleUnsettled();
      expect((await spendRows(tenantId)).unsettled).toBe(0);
    },
    { timeout: 10_000, interval: 200 },
  );
  await harness.services.spend.flush();
  await drainOutbox(harness.db, harness.services.store, [tenantId]);
}

describe('FLUSHALL between a request’s admit and its finalize', () => {
  it('the request ends done, is billed once, and a replayed finalize answers ALREADY_FINALIZED', async () => {
    const { tenantId, key } = await fundedTenant('Flushed', 1_000_000n);
    const raw = new Redis(redis.url);
    try {
      const response = await infer(harness, key, { prompt: 'flushed mid-stream', max_tokens: 20 });
      expect(response.status).toBe(200);
      const reader = (response.body as ReadableStream<Uint8Array>).getReader();
      let received = '';
      // Admitted and streaming: its reservation is in the store…
      while (!received.includes('"type":"token"')) {
        const { value, done } = await reader.read();
        if (done) break;
        received += new TextDecoder().decode(value);
      }
      // …until the store loses everything.
      await raw.flushall();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        received += new TextDecoder().decode(value);
      }
      const last = events(received).at(-1);
      expect(last).toMatchObject({ type: 'done', reservation_id: expect.stringMatching(/^res_/) });
      // Settled by the store, not left pending.
      expect(last?.settlement).toBeUndefined();
      const costMicro = BigInt(last?.cost_micro ?? '0');
      expect(costMicro).toBeGreaterThan(0n);
      const reservationId = last?.reservation_id as string;
      expect(settlements.filter((s) => s.reservationId === reservationId).map((s) => s.status)).toEqual([
        'HYDRATE',
        'RECOVERED',
      ]);

      await harness.services.spend.flush();
      expect(await spendRows(tenantId)).toEqual({ settled: 1, costMicro, unsettled: 0 });
      expect(await accountBalance(harness.db, accounts.spent(tenantId))).toBe(costMicro);
      // The balance rebuilt from the book, charged once.
      expect(await harness.services.store.snapshot(tenantId)).toEqual({
        creditedMicro: 1_000_000n,
        committedMicro: costMicro,
        reservedMicro: 0n,
        availableMicro: 1_000_000n - costMicro,
        outboxMicro: 0n,
        present: true,
      });

      const [row] = await harness.db.select().from(spend).where(eq(spend.reservationId, reservationId));
      if (row === undefined) throw new Error('no spend row');
      const replay = await harness.services.store.finalize({
        tenantId,
        reservationId,
        actualCostMicro: costMicro,
        nowMs: Date.now(),
        spend: {
          keyId: row.keyId,
          promptTokens: row.promptTokens,
          completionTokens: row.completionTokens,
          free: false,
        },
        recover: { pool: row.pool },
      });
      expect(replay).toEqual({ status: 'ALREADY_FINALIZED', chargedMicro: costMicro });
      expect((await harness.services.store.snapshot(tenantId)).committedMicro).toBe(costMicro);
      expect(
        await storeMetrics.registry.getSingleMetricAsString('spicegate_reservations_recovered_total'),
      ).toContain('spicegate_reservations_recovered_total 1');
    } finally {
      raw.disconnect();
    }
  });
});

describe('Redis stopped and restarted empty while 100 streams run', () => {
  it('admits nothing without a reservation; Σ cost of done responses = Σ spend rows = the ledger’s spent; store available = book', async () => {
    const granted = 50_000_000n;
    const { tenantId, key } = await fundedTenant('Restarted', granted);
    const recoveredBefore = settlements.filter((s) => s.status === 'RECOVERED').length;

    type Outcome = {
      phase: 'before' | 'down' | 'after';
      status: number;
      last?: SseEvent;
      code?: string;
      tokens: number;
    };
    const outcomes: Promise<Outcome>[] = [];
    let done = 0;
    const request = async (phase: Outcome['phase'], i: number): Promise<Outcome> => {
      // A user each: the burst bucket is per user.
      const response = await infer(harness, key, { prompt: `stream ${i}`, max_tokens: 20, user: `u${i}` });
      if (response.status !== 200) {
        const body = (await response.json()) as { error: { code: string } };
        return { phase, status: response.status, code: body.error.code, tokens: 0 };
      }
      const all = events(await response.text());
      done += 1;
      return {
        phase,
        status: 200,
        last: all.at(-1) as SseEvent,
        tokens: all.filter((e) => e.type === 'token').length,
      };
    };
    const launch = async (phase: Outcome['phase'], from: number, count: number) => {
      for (let i = from; i < from + count; i += 1) {
        outcomes.push(request(phase, i));
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    };

    // 60 streams admitted while Redis holds the data; once all are admitted and 15 have finished
    // (the others mid-stream), Redis dies.
    const admittedBefore = admitted.size;
    await launch('before', 0, 60);
    await vi.waitFor(
      () => {
        expect(admitted.size - admittedBefore).toBe(60);
        expect(done).toBeGreaterThanOrEqual(15);
      },
      { timeout: 30_000, interval: 10 },
    );
    await redis.stop();
    // 20 requests while it is down: each is refused before any token.
    await launch('down', 60, 20);
    await Promise.all(outcomes.slice(60));
    // Restarted empty, on the same port; the gateway's connection comes back by itself.
    redis = await startRedisServer({ port: redis.port });
    await vi.waitFor(() => harness.services.store.ping(), { timeout: 15_000, interval: 100 });
    // 20 streams after the restart.
    await launch('after', 80, 20);
    const results = await Promise.all(outcomes);

    // Nothing admitted without a reservation: every answer with tokens had its admit made by the
    // script (a reservation written), and every request while Redis was down was refused.
    const down = results.filter((r) => r.phase === 'down');
    expect(down).toHaveLength(20);
    for (const r of down) expect(r).toMatchObject({ status: 503, code: 'store_unavailable', tokens: 0 });
    const served = results.filter((r) => r.status === 200);
    expect(served).toHaveLength(80);
    const servedIds = served.map((r) => r.last?.reservation_id as string);
    for (const r of served)
      expect(r.last).toMatchObject({ type: 'done', reservation_id: expect.stringMatching(/^res_/) });
    for (const id of servedIds) expect(admitted.has(id)).toBe(true);
    const mine = new Set(servedIds);
    expect([...admitted].filter((id) => mine.has(id))).toHaveLength(80);
    // Those admitted after the restart have their reservation in the restarted store.
    const raw = new Redis(redis.url);
    try {
      for (const r of served.filter((o) => o.phase === 'after')) {
        expect(await raw.hget(`${tenantKey(tenantId)}:res:${r.last?.reservation_id}`, 'state')).toBe(
          'finalized',
        );
      }
    } finally {
      raw.disconnect();
    }

    await settleEverything(tenantId);
    // Streams admitted before the loss and settled after it were billed through recovery.
    const recovered = settlements.filter((s) => s.status === 'RECOVERED' && mine.has(s.reservationId));
    expect(recovered.length).toBeGreaterThan(0);
    expect(settlements.filter((s) => s.status === 'RECOVERED')).toHaveLength(
      recoveredBefore + recovered.length,
    );

    // Every charge once: Σ cost_micro of done responses = Σ spend rows = the ledger's spent.
    const charged = served.reduce((sum, r) => sum + BigInt(r.last?.cost_micro ?? '0'), 0n);
    expect(charged).toBeGreaterThan(0n);
    expect(await spendRows(tenantId)).toEqual({ settled: 80, costMicro: charged, unsettled: 0 });
    const rows = await harness.db
      .select({ reservationId: spend.reservationId, costMicro: spend.costMicro })
      .from(spend)
      .where(and(eq(spend.tenantId, tenantId), eq(spend.settled, true)));
    const byId = new Map(rows.map((row) => [row.reservationId, row.costMicro]));
    for (const r of served)
      expect(byId.get(r.last?.reservation_id as string)).toBe(BigInt(r.last?.cost_micro ?? '-1'));
    expect(await accountBalance(harness.db, accounts.spent(tenantId))).toBe(charged);

    // The store, rebuilt from the book, agrees with it once the cancels of the refused admits are done.
    const bookAvailable = await accountBalance(harness.db, accounts.available(tenantId));
    expect(bookAvailable).toBe(granted - charged);
    await vi.waitFor(
      async () =>
        expect(await harness.services.store.snapshot(tenantId)).toEqual({
          creditedMicro: granted,
          committedMicro: charged,
          reservedMicro: 0n,
          availableMicro: bookAvailable,
          outboxMicro: 0n,
          present: true,
        }),
      { timeout: 15_000, interval: 200 },
    );
  }, 120_000);
});
