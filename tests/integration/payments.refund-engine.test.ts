import { eq } from 'drizzle-orm';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CryptoPaymentRow, cryptoPayments } from '../../db/schema/index.js';
import { grantCredits } from '../../src/billing/credits.js';
import { newId } from '../../src/ids.js';
import { createKey } from '../../src/keys/keys.js';
import { checkTenant } from '../../src/ledger/conservation.js';
import { withHydration } from '../../src/ledger/hydrate.js';
import { accountBalance, accounts } from '../../src/ledger/journal.js';
import { applyEngineChanges, refundDebitId } from '../../src/payments/engine.js';
import { applyStatusReport } from '../../src/payments/state-machine.js';
import type { Services } from '../../src/services.js';
import { StoreUnavailable } from '../../src/store/errors.js';
import { tenantKey } from '../../src/store/typed-store.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarnessOnOwnRedis, type Harness } from '../support/harness.js';
import type { RedisServer } from '../support/redis-server.js';
import { events, infer } from '../support/sse.js';

/**
 * The engine's side of a refund (src/payments/engine.ts, lua/debit.v1.lua): once the book has
 * taken a refunded payment's credits back, the store's balance is lowered by what the book took,
 * exactly once — also when the store lost its data in between (hydration rebuilds it from the book,
 * which lists the refund's debit id as applied). Payments are inserted directly, then moved by
 * provider reports through the state machine.
 */

const PACK_MICRO = 5_000_000n;

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

async function tenant(): Promise<string> {
  return (await createTenant(harness.services, { name: 'Refund', tier: 4 })).id;
}

async function adminGrant(tenantId: string, amountMicro: bigint): Promise<void> {
  await grantCredits(harness.services, { tenantId, amountMicro, reason: 'test', grantedBy: 'test' });
}

/** A payment for the starter pack, waiting: as invoice creation leaves it. */
async function payment(tenantId: string): Promise<string> {
  const id = newId('pay');
  const now = new Date(harness.services.clock.now());
  await harness.db.insert(cryptoPayments).values({
    id,
    tenantId,
    pack: 'starter',
    priceAmount: '5',
    priceCurrency: 'usd',
    creditsMicro: PACK_MICRO,
    status: 'waiting',
    statusRank: 0,
    createdAt: now,
    updatedAt: now,
  });
  return id;
}

let reportTime = 1_000;
/** A provider report of `status` for the payment, newer than every earlier one. */
async function report(id: string, status: 'finished' | 'refunded', services: Services = harness.services) {
  reportTime += 1;
  const outcome = await applyStatusReport(services, { orderId: id, status, updatedAtMs: reportTime });
  expect(outcome).toMatchObject({ status: 'processed', paymentStatus: status });
}

async function row(id: string): Promise<CryptoPaymentRow> {
  const [found] = await harness.db.select().from(cryptoPayments).where(eq(cryptoPayments.id, id));
  if (found === undefined) throw new Error(`no payment ${id}`);
  return found;
}

/** The tenant's credited balance as the book holds it: available + spent. */
async function bookCredited(tenantId: string): Promise<bigint> {
  const { db } = harness;
  return (
    (await accountBalance(db, accounts.available(tenantId))) +
    (await accountBalance(db, accounts.spent(tenantId)))
  );
}

const debitAgain = (tenantId: string, id: string, amountMicro: bigint) =>
  withHydration(harness.services, tenantId, () =>
    harness.services.store.debit({ tenantId, debitId: refundDebitId(id), amountMicro }),
  );

const refundLogs = (paymentId: string, msg: string) =>
  harness.logs.filter((line) => line.paymentId === paymentId && line.msg === msg);

describe('a refund after the mint', () => {
  it("lowers the engine's balance by what the book took back, once, and marks the payment", async () => {
    const tenantId = await tenant();
    await adminGrant(tenantId, 1_000_000n);
    const id = await payment(tenantId);
    await report(id, 'finished');
    expect((await harness.services.store.snapshot(tenantId)).creditedMicro).toBe(6_000_000n);

    await report(id, 'refunded');
    const refunded = await row(id);
    expect(refunded.refundedMicro).toBe(PACK_MICRO);
    expect(refunded.engineDebitedAt).not.toBeNull();
    expect(await bookCredited(tenantId)).toBe(1_000_000n);
    expect(await harness.services.store.snapshot(tenantId)).toMatchObject({
      creditedMicro: 1_000_000n,
      availableMicro: 1_000_000n,
    });

    // The engine step again (a job's retry) and the debit itself again change nothing.
    await applyEngineChanges(harness.services, id);
    expect(await debitAgain(tenantId, id, PACK_MICRO)).toEqual({
      status: 'ALREADY_APPLIED',
      creditedMicro: 1_000_000n,
      availableMicro: 1_000_000n,
    });
    expect(refundLogs(id, 'payment refund debited')).toEqual([
      expect.objectContaining({ status: 'DEBITED', refundedMicro: PACK_MICRO.toString() }),
    ]);
  });

  it('after some credits were spent, lowers it by what the book took back, not by the pack', async () => {
    const tenantId = await tenant();
    const id = await payment(tenantId);
    await report(id, 'finished');
    const { key } = await createKey(harness.services, tenantId, { name: 'live' });
    for (let i = 0; i < 3; i += 1) {
      const response = await infer(harness, key, { prompt: 'hello world', max_tokens: 10 });
      expect(response.status).toBe(200);
      expect(events(await response.text()).at(-1)?.type).toBe('done');
    }
    await harness.services.spend.flush();
    const spent = await accountBalance(harness.db, accounts.spent(tenantId));
    expect(spent).toBeGreaterThan(0n);

    await report(id, 'refunded');
    const refunded = await row(id);
    expect(refunded.refundedMicro).toBe(PACK_MICRO - spent);
    expect(refunded.refundShortfallMicro).toBe(spent);
    expect(refunded.engineDebitedAt).not.toBeNull();
    // What was spent stays spent: the store holds the book's figures, nothing left to spend.
    expect(await bookCredited(tenantId)).toBe(spent);
    expect(await harness.services.store.snapshot(tenantId)).toMatchObject({
      creditedMicro: spent,
      committedMicro: spent,
      reservedMicro: 0n,
      availableMicro: 0n,
    });
  });
});

describe('a refund and a store that lost its data', () => {
  it("after FLUSHALL the refund's debit is applied: debiting again answers ALREADY_APPLIED, credited is the book's", async () => {
    const tenantId = await tenant();
    await adminGrant(tenantId, 1_000_000n);
    const id = await payment(tenantId);
    await report(id, 'finished');
    await report(id, 'refunded');

    await raw.flushall();
    expect((await harness.services.store.snapshot(tenantId)).present).toBe(false);

    expect(await debitAgain(tenantId, id, PACK_MICRO)).toEqual({
      status: 'ALREADY_APPLIED',
      creditedMicro: 1_000_000n,
      availableMicro: 1_000_000n,
    });
    expect(await bookCredited(tenantId)).toBe(1_000_000n);
  });

  it('FLUSHALL between the mint and the refund: the engine step hydrates from the book, which holds the refund, and takes nothing twice', async () => {
    const tenantId = await tenant();
    await adminGrant(tenantId, 1_000_000n);
    const id = await payment(tenantId);
    await report(id, 'finished');

    await raw.flushall();
    await report(id, 'refunded');

    expect((await row(id)).engineDebitedAt).not.toBeNull();
    expect(refundLogs(id, 'payment refund debited')).toEqual([
      expect.objectContaining({ status: 'ALREADY_APPLIED' }),
    ]);
    expect(await harness.services.store.snapshot(tenantId)).toMatchObject({
      creditedMicro: 1_000_000n,
      availableMicro: 1_000_000n,
      present: true,
    });
  });
});

describe('a refund the engine cannot take now', () => {
  it('refused by the store (credited below it): left owed and logged; after the conservation repair it is applied, once', async () => {
    const tenantId = await tenant();
    await adminGrant(tenantId, 1_000_000n);
    const id = await payment(tenantId);
    await report(id, 'finished');
    // A store that lost credits the book holds (drift): less than the refund is left.
    await raw.hset(`${tenantKey(tenantId)}:bal`, 'credited', '100');

    await report(id, 'refunded');
    expect((await row(id)).engineDebitedAt).toBeNull();
    expect(
      refundLogs(id, 'the store refused a refund: the conservation job will bring the book to it'),
    ).toEqual([expect.objectContaining({ level: 'error', field: 'amountMicro' })]);
    expect((await harness.services.store.snapshot(tenantId)).creditedMicro).toBe(100n);

    const repair = await checkTenant(harness.services, tenantId, { repair: true, confirmAfterMs: 20 });
    expect(repair.status).toBe('repaired');
    // The repair wrote the book's figures and its applied ids, the refund's debit among them.
    await applyEngineChanges(harness.services, id);
    expect((await row(id)).engineDebitedAt).not.toBeNull();
    expect(refundLogs(id, 'payment refund debited')).toEqual([
      expect.objectContaining({ status: 'ALREADY_APPLIED' }),
    ]);
    expect((await harness.services.store.snapshot(tenantId)).creditedMicro).toBe(1_000_000n);
  });

  it('a store fault: the report still succeeds, the refund stays owed, and the next engine step applies it', async () => {
    const tenantId = await tenant();
    const id = await payment(tenantId);
    await report(id, 'finished');
    const down: Services = {
      ...harness.services,
      store: { ...harness.services.store, debit: () => Promise.reject(new StoreUnavailable()) },
    };

    await report(id, 'refunded', down);
    expect((await row(id)).engineDebitedAt).toBeNull();
    expect(refundLogs(id, 'payment in the book, not yet in the engine')).toHaveLength(1);
    expect((await harness.services.store.snapshot(tenantId)).creditedMicro).toBe(PACK_MICRO);

    await applyEngineChanges(harness.services, id);
    expect((await row(id)).engineDebitedAt).not.toBeNull();
    expect((await harness.services.store.snapshot(tenantId)).creditedMicro).toBe(0n);
  });
});

it('an admin grant cannot take a refund debit id (the store keeps both in one record of applied ids)', async () => {
  const tenantId = await tenant();
  await expect(
    grantCredits(harness.services, {
      tenantId,
      amountMicro: 1n,
      reason: 'test',
      grantedBy: 'test',
      grantId: refundDebitId('pay_x'),
    }),
  ).rejects.toMatchObject({ code: 'invalid_request' });
});
