import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Db } from '../../db/index.js';
import { spend } from '../../db/schema/index.js';
import { systemClock } from '../../src/clock.js';
import { accountBalance, accounts } from '../../src/ledger/journal.js';
import { SpendRecorder } from '../../src/ledger/spend.js';
import { silentLogger } from '../../src/observability/logger.js';
import { tenantKey } from '../../src/store/typed-store.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { settleOneHeld } from '../support/engines.js';
import { createHarness, type Harness } from '../support/harness.js';
import { deleteKeysWithPrefix } from '../support/redis-cleanup.js';

/**
 * The process that settles a request writes its spend row itself (SpendRecorder.settled → flush),
 * then acknowledges exactly that row's outbox entry: the outbox matters only when that process
 * dies, and a store that loses its data loses no row the process still holds.
 */
let harness: Harness;
beforeAll(async () => {
  harness = await createHarness();
});
afterAll(() => harness.close());

/** The harness's database, with writes (db.execute) that fail while `down` is set. */
function flakyDatabase(db: Db) {
  const state = { down: false, writes: 0 };
  const flaky = new Proxy(db, {
    get(target, property, receiver) {
      // Writes run in a transaction of their tenant's scope (db/scope.ts): it is refused at BEGIN.
      if (property !== 'transaction') return Reflect.get(target, property, receiver);
      return async (...args: Parameters<Db['transaction']>) => {
        state.writes += 1;
        if (state.down) throw new Error('connection refused');
        return target.transaction(...args);
      };
    },
  });
  return { db: flaky, state };
}

function recorder(db: Db = harness.db): SpendRecorder {
  return new SpendRecorder(db, harness.services.store, systemClock, silentLogger(), { inc: () => {} });
}

async function fundedTenant(): Promise<string> {
  const { id } = await createTenant(harness.services, { name: 'Held', tier: 4 });
  await harness.services.store.credit({ tenantId: id, grantId: 'g', amountMicro: 1_000_000n });
  return id;
}

async function rows(tenantId: string) {
  return harness.db.select().from(spend).where(eq(spend.tenantId, tenantId));
}

async function outboxIds(tenantId: string): Promise<string[]> {
  const read = await harness.services.store.outboxRead({ tenantId, count: 1000 });
  if (read.status !== 'OUTBOX') throw new Error(read.field);
  return read.entries.map((entry) => entry.reservationId);
}

describe('SpendRecorder', () => {
  it('writes the rows it holds and acknowledges exactly their entries; another process’s entries stay', async () => {
    const tenantId = await fundedTenant();
    const { store } = harness.services;
    const mine = recorder();
    const held = await settleOneHeld(store, tenantId, { actualCostMicro: 30n });
    // Settled by another (live) process: its entry is that process's to write and acknowledge.
    const others = await settleOneHeld(store, tenantId, { actualCostMicro: 50n });
    mine.settled(held.row, held.outboxEntryId);
    await mine.flush();

    expect((await rows(tenantId)).map((row) => row.reservationId)).toEqual([held.row.reservationId]);
    expect(await outboxIds(tenantId)).toEqual([others.row.reservationId]);
    expect(await accountBalance(harness.db, accounts.spent(tenantId))).toBe(30n);
  });

  it('a row it holds reaches the book even when the store has lost its data meanwhile', async () => {
    const tenantId = await fundedTenant();
    const { store } = harness.services;
    const mine = recorder();
    for (const cost of [11n, 22n, 33n]) {
      const { row, outboxEntryId } = await settleOneHeld(store, tenantId, { actualCostMicro: cost });
      mine.settled(row, outboxEntryId);
    }
    // Every key of the tenant gone, the outbox with them (as FLUSHALL would).
    await deleteKeysWithPrefix(inject('redisUrl'), `${harness.shared.keyPrefix}${tenantKey(tenantId)}`);
    expect(await outboxIds(tenantId)).toEqual([]);

    await mine.flush();
    expect(await rows(tenantId)).toHaveLength(3);
    expect(await accountBalance(harness.db, accounts.spent(tenantId))).toBe(66n);
  });

  it('rows whose write failed stay held and are written later; while failing, only the timer retries', async () => {
    const tenantId = await fundedTenant();
    const { store } = harness.services;
    const { db, state } = flakyDatabase(harness.db);
    const mine = recorder(db);
    const first = await settleOneHeld(store, tenantId, { actualCostMicro: 7n });
    mine.settled(first.row, first.outboxEntryId);

    state.down = true;
    await expect(mine.flush()).rejects.toThrow('connection refused');
    expect(await rows(tenantId)).toEqual([]);
    // Not acknowledged: the entry is still in the outbox for the drain, should this process die.
    expect(await outboxIds(tenantId)).toEqual([first.row.reservationId]);

    // A full batch would write at once, but not while the last write failed.
    const writesBefore = state.writes;
    for (let i = 0; i < 64; i += 1) {
      const { row, outboxEntryId } = await settleOneHeld(store, tenantId, { actualCostMicro: 1n });
      mine.settled(row, outboxEntryId);
    }
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    expect(state.writes).toBe(writesBefore);

    // The next flush (the timer's, here called directly) writes all of them, the failed one first.
    state.down = false;
    await mine.flush();
    expect(await rows(tenantId)).toHaveLength(65);
    expect(await outboxIds(tenantId)).toEqual([]);
    expect(await accountBalance(harness.db, accounts.spent(tenantId))).toBe(71n);
    expect(await harness.services.store.snapshot(tenantId)).toMatchObject({ committedMicro: 71n });
  });

  it('the timer’s write leaves acknowledging to the tenant’s next finalize, and acknowledges alone what none took within 500 ms', async () => {
    const tenantId = await fundedTenant();
    const { store } = harness.services;
    const clock = { nowMs: Date.now(), now: () => clock.nowMs };
    const mine = new SpendRecorder(harness.db, store, clock, silentLogger(), { inc: () => {} });
    const first = await settleOneHeld(store, tenantId, { actualCostMicro: 5n });
    mine.settled(first.row, first.outboxEntryId);
    await mine.writeHeld();
    expect(await rows(tenantId)).toHaveLength(1);
    // Written, not yet acknowledged: no store call of its own.
    expect(await outboxIds(tenantId)).toEqual([first.row.reservationId]);

    // The tenant's next finalize carries it (the request path: takeAcks, then finalize).
    expect(mine.takeAcks('ten_other')).toEqual([]);
    const ack = mine.takeAcks(tenantId);
    expect(ack).toEqual([{ id: first.outboxEntryId, reservationId: first.row.reservationId }]);
    expect(mine.takeAcks(tenantId)).toEqual([]);
    const second = await settleOneHeld(store, tenantId, { actualCostMicro: 6n, ack });
    expect(await outboxIds(tenantId)).toEqual([second.row.reservationId]);

    // No finalize follows: the write after 500 ms acknowledges it alone, not the one before.
    mine.settled(second.row, second.outboxEntryId);
    await mine.writeHeld();
    clock.nowMs += 499;
    await mine.writeHeld();
    expect(await outboxIds(tenantId)).toEqual([second.row.reservationId]);
    clock.nowMs += 1;
    await mine.writeHeld();
    expect(await outboxIds(tenantId)).toEqual([]);

    // Taken by a finalize that then failed: put back, acknowledged all the same.
    const third = await settleOneHeld(store, tenantId, { actualCostMicro: 7n });
    mine.settled(third.row, third.outboxEntryId);
    await mine.writeHeld();
    mine.putBackAcks(tenantId, mine.takeAcks(tenantId));
    await mine.flush();
    expect(await outboxIds(tenantId)).toEqual([]);
    expect(await accountBalance(harness.db, accounts.spent(tenantId))).toBe(18n);
  });

  it('stop() writes every row it holds', async () => {
    const tenantId = await fundedTenant();
    const mine = recorder();
    const { row, outboxEntryId } = await settleOneHeld(harness.services.store, tenantId, {
      actualCostMicro: 9n,
    });
    mine.settled(row, outboxEntryId);
    await mine.stop();
    expect(await rows(tenantId)).toHaveLength(1);
    expect(await outboxIds(tenantId)).toEqual([]);
  });
});
