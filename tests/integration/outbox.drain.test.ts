import { and, eq } from 'drizzle-orm';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { journalEntries, spend } from '../../db/schema/index.js';
import { grantCredits } from '../../src/billing/credits.js';
import { accountBalance, accounts } from '../../src/ledger/journal.js';
import { drainOutbox, writeSettledSpend } from '../../src/ledger/outbox.js';
import { silentLogger } from '../../src/observability/logger.js';
import { redisStore, type Store } from '../../src/store/index.js';
import { tenantKey } from '../../src/store/typed-store.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { settleOne } from '../support/engines.js';
import { createHarness, type Harness } from '../support/harness.js';
import { deleteKeysWithPrefix } from '../support/redis-cleanup.js';

/**
 * The outbox drain (src/ledger/outbox.ts) on real Redis and PostgreSQL: settlements the store
 * recorded at finalize become spend rows and `spend` entries once, however often and by however
 * many drainers they are drained; the unsettled-row path meets it without a double entry.
 */
let harness: Harness;
/** A connection of the test's own, under the harness's key prefix, for the raw balance field. */
let redis: Redis;
beforeAll(async () => {
  harness = await createHarness();
  redis = new Redis(inject('redisUrl'), { keyPrefix: harness.shared.keyPrefix });
});
afterAll(async () => {
  redis.disconnect();
  await harness.close();
});

async function fundedTenant(): Promise<string> {
  const { id } = await createTenant(harness.services, { name: 'Drain', tier: 4 });
  await harness.services.store.credit({ tenantId: id, grantId: 'g', amountMicro: 1_000_000n });
  return id;
}

/** What the book and the store say about a tenant's settlements. */
async function state(tenantId: string) {
  const { db } = harness;
  const { store } = harness.services;
  const rows = await db.select().from(spend).where(eq(spend.tenantId, tenantId));
  const spendEntries = await db
    .select()
    .from(journalEntries)
    .where(and(eq(journalEntries.tenantId, tenantId), eq(journalEntries.kind, 'spend')));
  const read = await store.outboxRead({ tenantId, count: 1000 });
  if (read.status !== 'OUTBOX') throw new Error(read.field);
  return {
    rows,
    entries: spendEntries.length,
    spentMicro: await accountBalance(db, accounts.spent(tenantId)),
    waiting: read.entries.length,
    outboxMicro: await outboxField(tenantId),
  };
}

/** The balance's `outbox` field: charges waiting in the outbox (null: never written). */
function outboxField(tenantId: string): Promise<string | null> {
  return redis.hget(`${tenantKey(tenantId)}:bal`, 'outbox');
}

describe('drainOutbox', () => {
  it('writes each settlement once: a row per request, an entry per charge, the outbox and its figure back to empty', async () => {
    const tenantId = await fundedTenant();
    const { db } = harness;
    const { store } = harness.services;
    const paid = await settleOne(store, tenantId, { actualCostMicro: 300n, spend: { keyId: 'key_paid' } });
    const free = await settleOne(store, tenantId, {
      reservedMicro: 0n,
      actualCostMicro: 25n,
      spend: { keyId: 'key_sandbox', free: true },
    });
    const released = await settleOne(store, tenantId, { actualCostMicro: 0n });
    expect(await outboxField(tenantId)).toBe('300');

    expect(await drainOutbox(db, store, [tenantId])).toEqual({ entries: 3, rowsSettled: 3 });
    const after = await state(tenantId);
    expect(after).toMatchObject({ entries: 1, spentMicro: 300n, waiting: 0, outboxMicro: '0' });
    const byId = new Map(after.rows.map((row) => [row.reservationId, row]));
    expect(byId.get(paid)).toMatchObject({
      keyId: 'key_paid',
      pool: 'standard',
      promptTokens: 0,
      completionTokens: 2,
      costMicro: 300n,
      free: false,
      settled: true,
      parkedReason: null,
    });
    expect(byId.get(free)).toMatchObject({ keyId: 'key_sandbox', costMicro: 25n, free: true, settled: true });
    expect(byId.get(released)).toMatchObject({ costMicro: 0n, settled: true });

    // Drained again: nothing left to read, nothing written.
    expect(await drainOutbox(db, store, [tenantId])).toEqual({ entries: 0, rowsSettled: 0 });
    expect(await state(tenantId)).toMatchObject({ entries: 1, spentMicro: 300n });
  });

  it('drains a tenant past one read (several batches) and many tenants in one call', async () => {
    const { db } = harness;
    const { store } = harness.services;
    const tenants = [await fundedTenant(), await fundedTenant(), await fundedTenant()];
    for (const tenantId of tenants) {
      for (let i = 0; i < 7; i += 1) await settleOne(store, tenantId, { actualCostMicro: 10n });
    }
    expect(await drainOutbox(db, store, tenants, { readCount: 3 })).toEqual({ entries: 21, rowsSettled: 21 });
    for (const tenantId of tenants) {
      expect(await state(tenantId)).toMatchObject({
        entries: 7,
        spentMicro: 70n,
        waiting: 0,
        outboxMicro: '0',
      });
    }
  });

  it('two drainers at once, on their own connections: one row and one entry per settlement', async () => {
    const tenantId = await fundedTenant();
    const { db } = harness;
    const { store } = harness.services;
    let charged = 0n;
    for (let i = 0; i < 50; i += 1) {
      const cost = BigInt(1 + i);
      await settleOne(store, tenantId, { actualCostMicro: cost });
      charged += cost;
    }
    const other: Store = redisStore({
      url: inject('redisUrl'),
      keyPrefix: harness.shared.keyPrefix,
      log: silentLogger(),
    });
    try {
      const [first, second] = await Promise.all([
        drainOutbox(db, store, [tenantId], { readCount: 10 }),
        drainOutbox(db, other, [tenantId], { readCount: 10 }),
      ]);
      // Both ran; between them every row was settled exactly once.
      expect(first.entries).toBeGreaterThan(0);
      expect(second.entries).toBeGreaterThan(0);
      expect(first.rowsSettled + second.rowsSettled).toBe(50);
    } finally {
      await other.close();
    }
    const after = await state(tenantId);
    expect(after.rows).toHaveLength(50);
    expect(after).toMatchObject({ entries: 50, spentMicro: charged, waiting: 0, outboxMicro: '0' });
  });

  it('with olderThanMs, leaves younger entries to the live process that settled them', async () => {
    const tenantId = await fundedTenant();
    const { db } = harness;
    const { store } = harness.services;
    await settleOne(store, tenantId, { actualCostMicro: 15n });
    await settleOne(store, tenantId, { actualCostMicro: 25n });
    // Both were appended within the last minute (the store's clock is this machine's).
    expect(await drainOutbox(db, store, [tenantId], { olderThanMs: Date.now() - 60_000 })).toEqual({
      entries: 0,
      rowsSettled: 0,
    });
    expect(await state(tenantId)).toMatchObject({ rows: [], waiting: 2, outboxMicro: '40' });
    expect(await drainOutbox(db, store, [tenantId], { olderThanMs: Date.now() + 60_000 })).toEqual({
      entries: 2,
      rowsSettled: 2,
    });
    expect(await state(tenantId)).toMatchObject({
      entries: 2,
      spentMicro: 40n,
      waiting: 0,
      outboxMicro: '0',
    });
  });

  it('a beforeWrite that throws (a lost lease) aborts the drain: nothing written, nothing acknowledged', async () => {
    const tenantId = await fundedTenant();
    const { db } = harness;
    const { store } = harness.services;
    await settleOne(store, tenantId, { actualCostMicro: 80n });
    await expect(
      drainOutbox(db, store, [tenantId], {
        beforeWrite: async () => {
          throw new Error('STALE');
        },
      }),
    ).rejects.toThrow('STALE');
    expect(await state(tenantId)).toMatchObject({ rows: [], entries: 0, waiting: 1, outboxMicro: '80' });
    let checks = 0;
    await drainOutbox(db, store, [tenantId], {
      beforeWrite: async () => {
        checks += 1;
      },
    });
    expect(checks).toBe(1);
    expect(await state(tenantId)).toMatchObject({
      entries: 1,
      spentMicro: 80n,
      waiting: 0,
      outboxMicro: '0',
    });
  });
});

describe('an unsettled spend row (the store failed at finalize) and the outbox', () => {
  /** The row the request path keeps when finalize fails, for a reservation admitted on `tenantId`. */
  async function unsettledRow(tenantId: string, costMicro: bigint, free = false) {
    const { store } = harness.services;
    const admitted = await store.admit({
      tenantId,
      keyId: 'key_u',
      pool: 'standard',
      reservationId: `res_u_${Math.random().toString(36).slice(2)}`,
      costMicro: free ? 0n : 1_000n,
      tokenEstimate: 10,
      nowMs: Date.now(),
      ttlMs: 300_000,
      limits: {
        tenantRpm: null,
        userRpm: null,
        channelRpm: null,
        keyRpm: null,
        burstCapacity: null,
        burstRefillPerMinute: 0,
        keyTpd: null,
        tenantMonthlyCapMicro: null,
        keyMonthlyCapMicro: null,
      },
    });
    if (admitted.status !== 'ADMITTED') throw new Error(admitted.status);
    const entry = {
      reservationId: admitted.reservationId,
      tenantId,
      keyId: 'key_u',
      pool: 'standard',
      promptTokens: 1,
      completionTokens: 2,
      costMicro,
      free,
    };
    await harness.services.spend.unsettled(entry);
    /** The timed-out finalize, had it reached the store after all. */
    const finalizeRan = () =>
      store.finalize({
        tenantId,
        reservationId: entry.reservationId,
        actualCostMicro: costMicro,
        nowMs: Date.now(),
        spend: { keyId: 'key_u', promptTokens: 1, completionTokens: 2, free },
      });
    return { entry, finalizeRan };
  }

  it('the timed-out finalize did run: the drain settles the kept row with one entry; the settlement job then finds nothing', async () => {
    const tenantId = await fundedTenant();
    const { entry, finalizeRan } = await unsettledRow(tenantId, 120n);
    await finalizeRan();
    await drainOutbox(harness.db, harness.services.store, [tenantId]);
    const after = await state(tenantId);
    expect(after.rows).toEqual([
      expect.objectContaining({ reservationId: entry.reservationId, settled: true, costMicro: 120n }),
    ]);
    expect(after).toMatchObject({ entries: 1, spentMicro: 120n, waiting: 0, outboxMicro: '0' });
    expect(await harness.services.spend.settleUnsettled()).toBe(0);
    expect(await state(tenantId)).toMatchObject({ entries: 1, spentMicro: 120n });
  });

  it('the timed-out finalize did run and the settlement job comes first (ALREADY_FINALIZED): one entry, the outbox drained', async () => {
    const tenantId = await fundedTenant();
    const { entry, finalizeRan } = await unsettledRow(tenantId, 90n);
    await finalizeRan();
    expect(await outboxField(tenantId)).toBe('90');
    expect(await harness.services.spend.settleUnsettled()).toBe(1);
    const after = await state(tenantId);
    expect(after.rows).toEqual([
      expect.objectContaining({ reservationId: entry.reservationId, settled: true, costMicro: 90n }),
    ]);
    expect(after).toMatchObject({ entries: 1, spentMicro: 90n, waiting: 0, outboxMicro: '0' });
    // Its outbox entry drained again by another instance adds nothing.
    await drainOutbox(harness.db, harness.services.store, [tenantId]);
    expect(await state(tenantId)).toMatchObject({ entries: 1, spentMicro: 90n });
  });

  it('the finalize never ran: the settlement job settles the row (one entry) and drains what its finalize appended', async () => {
    const tenantId = await fundedTenant();
    const { entry } = await unsettledRow(tenantId, 45n);
    expect(await harness.services.spend.settleUnsettled()).toBe(1);
    const after = await state(tenantId);
    expect(after.rows).toEqual([
      expect.objectContaining({ reservationId: entry.reservationId, settled: true, costMicro: 45n }),
    ]);
    expect(after).toMatchObject({ entries: 1, spentMicro: 45n, waiting: 0, outboxMicro: '0' });
  });

  it('the store lost the reservation with its data: the settlement job recovers the charge once (RECOVERED)', async () => {
    const tenantId = await fundedTenant();
    const { entry } = await unsettledRow(tenantId, 45n);
    // Only the reservation is gone (its balance survived, or was rebuilt by another request).
    await redis.del(`${tenantKey(tenantId)}:res:${entry.reservationId}`);
    const before = await harness.services.store.snapshot(tenantId);
    expect(await harness.services.spend.settleUnsettled()).toBe(1);
    const after = await state(tenantId);
    expect(after.rows).toEqual([
      expect.objectContaining({
        reservationId: entry.reservationId,
        settled: true,
        costMicro: 45n,
        parkedReason: null,
      }),
    ]);
    expect(after).toMatchObject({ entries: 1, spentMicro: 45n, waiting: 0, outboxMicro: '0' });
    expect((await harness.services.store.snapshot(tenantId)).committedMicro).toBe(
      before.committedMicro + 45n,
    );
    // Run again: nothing left to settle, nothing charged twice.
    expect(await harness.services.spend.settleUnsettled()).toBe(0);
    expect((await harness.services.store.snapshot(tenantId)).committedMicro).toBe(
      before.committedMicro + 45n,
    );
  });

  it('the store lost everything of the tenant: the balance is rebuilt from the book, then the charge recovered', async () => {
    const { id: tenantId } = await createTenant(harness.services, { name: 'Lost', tier: 4 });
    await grantCredits(harness.services, {
      tenantId,
      amountMicro: 5_000n,
      reason: 'test',
      grantedBy: 'test',
    });
    const { entry } = await unsettledRow(tenantId, 120n);
    await deleteKeysWithPrefix(inject('redisUrl'), `${harness.shared.keyPrefix}${tenantKey(tenantId)}`);
    expect(await harness.services.spend.settleUnsettled()).toBe(1);
    expect(await state(tenantId)).toMatchObject({
      entries: 1,
      spentMicro: 120n,
      waiting: 0,
      outboxMicro: '0',
    });
    expect(await harness.services.store.snapshot(tenantId)).toEqual({
      creditedMicro: 5_000n,
      committedMicro: 120n,
      reservedMicro: 0n,
      availableMicro: 4_880n,
      outboxMicro: 0n,
      present: true,
    });
    expect(await accountBalance(harness.db, accounts.available(tenantId))).toBe(4_880n);
    expect(entry.reservationId).toMatch(/^res_u_/);
  });

  it('a free row is settled at its notional cost with no entry', async () => {
    const tenantId = await fundedTenant();
    await unsettledRow(tenantId, 33n, true);
    expect(await harness.services.spend.settleUnsettled()).toBe(1);
    const after = await state(tenantId);
    expect(after.rows).toEqual([expect.objectContaining({ settled: true, costMicro: 33n, free: true })]);
    expect(after).toMatchObject({ entries: 0, spentMicro: 0n, waiting: 0 });
  });

  it('a settled row is never changed by a later settlement of the same reservation', async () => {
    const tenantId = await fundedTenant();
    const { db } = harness;
    const { store } = harness.services;
    const reservationId = await settleOne(store, tenantId, { actualCostMicro: 70n });
    await drainOutbox(db, store, [tenantId]);
    const [row] = (await state(tenantId)).rows;
    if (row === undefined) throw new Error('no row');
    expect(
      await writeSettledSpend(db, [
        { ...row, costMicro: 999n, chargedMicro: 999n, settledAt: new Date(Date.now() + 60_000) },
      ]),
    ).toBe(0);
    const after = await state(tenantId);
    expect(after.rows).toEqual([row]);
    expect(after).toMatchObject({ entries: 1, spentMicro: 70n });
    expect(row.reservationId).toBe(reservationId);
  });
});
