import { and, eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { journalEntries, postings } from '../../db/schema/index.js';
import { createKey } from '../../src/keys/keys.js';
import { accountBalance, accounts, appendEntry, spendPostings } from '../../src/ledger/journal.js';
import { drainOutbox } from '../../src/ledger/outbox.js';
import { StoreUnavailable } from '../../src/store/errors.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { settleOne } from '../support/engines.js';
import { createHarness, createHarnessOnOwnRedis, type Harness } from '../support/harness.js';
import type { RedisServer } from '../support/redis-server.js';
import { events, infer, readWithStoreFrozen } from '../support/sse.js';
import { trpc } from '../support/trpc.js';

/** The book of record (docs/ledger.md): journal entries and postings in PostgreSQL (or PGlite). */

async function tenant(harness: Harness): Promise<string> {
  return (await createTenant(harness.services, { name: 'Ledger', tier: 4 })).id;
}

function entries(harness: Harness, kind: string, reference: string) {
  return harness.db
    .select()
    .from(journalEntries)
    .where(and(eq(journalEntries.kind, kind as 'grant'), eq(journalEntries.reference, reference)));
}

async function linesOf(harness: Harness, entryId: bigint) {
  const rows = await harness.db
    .select({ account: postings.account, amountMicro: postings.amountMicro })
    .from(postings)
    .where(eq(postings.entryId, entryId));
  return rows.sort((a, b) => a.account.localeCompare(b.account));
}

async function grant(harness: Harness, tenantId: string, amountMicro: bigint, grantId: string) {
  const response = await trpc(
    harness,
    harness.adminToken,
    'admin.credits.grant',
    { tenantId, amountMicro: amountMicro.toString(), reason: 'ledger test', grantId },
    'POST',
  );
  expect(response.status).toBe(200);
}

/** Why the database refused: the message of the error or of its cause (drizzle wraps it). */
async function refusal(write: Promise<unknown>): Promise<string> {
  try {
    await write;
  } catch (error) {
    const messages: string[] = [];
    for (let at: unknown = error; at instanceof Error; at = at.cause) messages.push(at.message);
    return messages.join(' / ');
  }
  throw new Error('the database accepted the write');
}

describe('the ledger', () => {
  let harness: Harness;
  beforeAll(async () => {
    harness = await createHarness();
  });
  afterAll(() => harness.close());

  it('refuses, at commit, an entry whose postings do not sum to zero', async () => {
    const tenantId = await tenant(harness);
    const refused = await refusal(
      harness.db.transaction((tx) =>
        appendEntry(tx, {
          tenantId,
          kind: 'adjustment',
          reference: 'unbalanced',
          postings: [
            { account: accounts.available(tenantId), amountMicro: 5n },
            { account: accounts.grantsIssued, amountMicro: -4n },
          ],
        }),
      ),
    );
    expect(refused).toMatch(/does not balance: its postings sum to 1/);
    expect(await entries(harness, 'adjustment', 'unbalanced')).toHaveLength(0);
    expect(await accountBalance(harness.db, accounts.available(tenantId))).toBe(0n);
  });

  it('checks the sum at commit, not per statement: postings written one by one balance in the end', async () => {
    const tenantId = await tenant(harness);
    await harness.db.transaction(async (tx) => {
      const [entry] = await tx
        .insert(journalEntries)
        .values({ tenantId, kind: 'adjustment', reference: 'one-by-one' })
        .returning({ id: journalEntries.id });
      if (entry === undefined) throw new Error('no entry');
      await tx
        .insert(postings)
        .values({ entryId: entry.id, account: accounts.available(tenantId), amountMicro: 7n });
      await tx
        .insert(postings)
        .values({ entryId: entry.id, account: accounts.grantsIssued, amountMicro: -7n });
    });
    expect(await accountBalance(harness.db, accounts.available(tenantId))).toBe(7n);
  });

  it('refuses an entry without postings', async () => {
    const tenantId = await tenant(harness);
    const refused = await refusal(
      harness.db.transaction(async (tx) => {
        await tx.insert(journalEntries).values({ tenantId, kind: 'adjustment', reference: 'empty' });
      }),
    );
    expect(refused).toMatch(/has no postings/);
    expect(await entries(harness, 'adjustment', 'empty')).toHaveLength(0);
  });

  it('refuses UPDATE and DELETE of postings and journal entries', async () => {
    const tenantId = await tenant(harness);
    const reference = 'immutable';
    await harness.db.transaction((tx) =>
      appendEntry(tx, {
        tenantId,
        kind: 'adjustment',
        reference,
        postings: [
          { account: accounts.available(tenantId), amountMicro: 3n },
          { account: accounts.grantsIssued, amountMicro: -3n },
        ],
      }),
    );
    const [entry] = await entries(harness, 'adjustment', reference);
    if (entry === undefined) throw new Error('no entry');
    const db = harness.db;
    const attempts = [
      sql`update postings set amount_micro = 300 where entry_id = ${entry.id}`,
      sql`delete from postings where entry_id = ${entry.id}`,
      sql`update journal_entries set tenant_id = 'someone-else' where id = ${entry.id}`,
      sql`delete from journal_entries where id = ${entry.id}`,
      sql`truncate postings`,
    ];
    for (const attempt of attempts) {
      expect(await refusal(db.execute(attempt))).toMatch(/the ledger is append-only/);
    }
    expect(await entries(harness, 'adjustment', reference)).toEqual([entry]);
    expect(await linesOf(harness, entry.id)).toEqual([
      { account: accounts.grantsIssued, amountMicro: -3n },
      { account: accounts.available(tenantId), amountMicro: 3n },
    ]);
  });

  it('an admin grant writes its entry with the credit_grants row; the same grant id twice → one entry', async () => {
    const tenantId = await tenant(harness);
    await grant(harness, tenantId, 2_500_000n, 'grant-twice');
    await grant(harness, tenantId, 2_500_000n, 'grant-twice');
    const written = await entries(harness, 'grant', 'grant-twice');
    expect(written).toHaveLength(1);
    expect(written[0]?.tenantId).toBe(tenantId);
    expect(await linesOf(harness, written[0]?.id ?? 0n)).toEqual([
      { account: accounts.grantsIssued, amountMicro: -2_500_000n },
      { account: accounts.available(tenantId), amountMicro: 2_500_000n },
    ]);
    expect(await accountBalance(harness.db, accounts.available(tenantId))).toBe(2_500_000n);
  });

  it('a grant the store refuses is reversed in the book by a compensating entry, and again when retried', async () => {
    const tenantId = await tenant(harness);
    const big = 1_000_000_000_000_000n;
    for (let index = 0; index < 4; index += 1)
      await grant(harness, tenantId, big, `ceiling-${index}-${tenantId}`);
    // Past the store's ceiling: refused, its row taken back.
    const refused = await trpc(
      harness,
      harness.adminToken,
      'admin.credits.grant',
      { tenantId, amountMicro: big.toString(), reason: 'too big', grantId: 'ceiling-over' },
      'POST',
    );
    expect(refused.status).toBe(400);
    expect(await entries(harness, 'grant', 'ceiling-over')).toHaveLength(1);
    const [reversal] = await harness.db
      .select()
      .from(journalEntries)
      .where(and(eq(journalEntries.kind, 'adjustment'), eq(journalEntries.tenantId, tenantId)));
    expect(reversal?.reference).toMatch(/^grant:ceiling-over:/);
    expect(await linesOf(harness, reversal?.id ?? 0n)).toEqual([
      { account: accounts.grantsIssued, amountMicro: big },
      { account: accounts.available(tenantId), amountMicro: -big },
    ]);
    expect(await accountBalance(harness.db, accounts.available(tenantId))).toBe(4n * big);

    // Tried again: granted anew (the grant entry exists, so by an adjustment), refused, reversed.
    const again = await trpc(
      harness,
      harness.adminToken,
      'admin.credits.grant',
      { tenantId, amountMicro: big.toString(), reason: 'too big', grantId: 'ceiling-over' },
      'POST',
    );
    expect(again.status).toBe(400);
    const adjustments = await harness.db
      .select({ id: journalEntries.id })
      .from(journalEntries)
      .where(and(eq(journalEntries.kind, 'adjustment'), eq(journalEntries.tenantId, tenantId)));
    expect(adjustments).toHaveLength(3);
    expect(await accountBalance(harness.db, accounts.available(tenantId))).toBe(4n * big);
  });

  it('settlements drained twice (the first acknowledgement lost) add one entry per charged reservation, none for a free row', async () => {
    const tenantId = await tenant(harness);
    await grant(harness, tenantId, 1_000_000n, `grant-${tenantId}`);
    const { store } = harness.services;
    const { db } = harness;
    const paid: [string, bigint][] = [
      [await settleOne(store, tenantId, { actualCostMicro: 40n }), 40n],
      [await settleOne(store, tenantId, { actualCostMicro: 2n }), 2n],
    ];
    const free = await settleOne(store, tenantId, {
      reservedMicro: 0n,
      actualCostMicro: 9n,
      spend: { free: true },
    });
    // The first drain writes, then loses its acknowledgement: the entries stay in the outbox.
    const ackLost = {
      ...store,
      outboxAck: async () => {
        throw new StoreUnavailable();
      },
    };
    await expect(drainOutbox(db, ackLost, [tenantId])).rejects.toThrow(StoreUnavailable);
    expect(await drainOutbox(db, store, [tenantId])).toEqual({ entries: 3, rowsSettled: 0 });

    for (const [reservationId, costMicro] of paid) {
      const written = await entries(harness, 'spend', reservationId);
      expect(written).toHaveLength(1);
      const lines = await linesOf(harness, written[0]?.id ?? 0n);
      expect(lines).toEqual([
        { account: accounts.available(tenantId), amountMicro: -costMicro },
        { account: accounts.spent(tenantId), amountMicro: costMicro },
      ]);
      // The SQL statement and journal.ts's description of a charge stay in step.
      expect(lines).toEqual(spendPostings(tenantId, costMicro));
    }
    expect(await entries(harness, 'spend', free)).toHaveLength(0);
    expect(await accountBalance(db, accounts.spent(tenantId))).toBe(42n);
  });

  it('after settled inference requests, the book spent = Σ cost_micro of done events and available = granted − spent', async () => {
    const tenantId = await tenant(harness);
    const granted = 1_000_000n;
    await grant(harness, tenantId, granted, `grant-${tenantId}`);
    const { key } = await createKey(harness.services, tenantId, { name: 'k' });
    let charged = 0n;
    // Five: the key's burst allowance.
    for (let index = 0; index < 5; index += 1) {
      const response = await infer(harness, key, { prompt: `request ${index}`, max_tokens: 8 + index });
      expect(response.status).toBe(200);
      const done = events(await response.text()).at(-1);
      expect(done?.type).toBe('done');
      charged += BigInt(done?.cost_micro ?? '0');
    }
    expect(charged).toBeGreaterThan(0n);
    await harness.services.spend.flush();

    const db = harness.db;
    expect(await accountBalance(db, accounts.spent(tenantId))).toBe(charged);
    expect(await accountBalance(db, accounts.available(tenantId))).toBe(granted - charged);
    // The store agrees with the book.
    expect((await harness.services.store.snapshot(tenantId)).availableMicro).toBe(granted - charged);
  });
});

describe('the ledger when the store fails at finalize', () => {
  let harness: Harness & { redis: RedisServer };
  beforeAll(async () => {
    harness = await createHarnessOnOwnRedis({ config: { localModelTokens: 20, localModelDelayMs: 50 } });
  });
  afterAll(() => harness.close());

  it('an unsettled row writes no spend entry until it is settled, then exactly one', async () => {
    const tenantId = await tenant(harness);
    await grant(harness, tenantId, 1_000_000n, `grant-${tenantId}`);
    const { key } = await createKey(harness.services, tenantId, { name: 'k' });
    const response = await infer(harness, key, { prompt: 'slow and unlucky', max_tokens: 20 });
    expect(response.status).toBe(200);
    const done = events(await readWithStoreFrozen(harness, response)).at(-1);
    expect(done?.settlement).toBe('pending');
    const reservationId = done?.reservation_id ?? '';
    await harness.services.spend.flush();
    expect(await entries(harness, 'spend', reservationId)).toHaveLength(0);
    expect(await accountBalance(harness.db, accounts.spent(tenantId))).toBe(0n);

    expect(await harness.services.spend.settleUnsettled()).toBe(1);
    expect(await harness.services.spend.settleUnsettled()).toBe(0);
    expect(await entries(harness, 'spend', reservationId)).toHaveLength(1);
    const cost = BigInt(done?.cost_micro ?? '0');
    expect(await accountBalance(harness.db, accounts.spent(tenantId))).toBe(cost);
    expect(await accountBalance(harness.db, accounts.available(tenantId))).toBe(1_000_000n - cost);
  });
});
