import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { and, eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { DbHandle } from '../../db/index.js';
import { migrationsFolder } from '../../db/migrations-folder.js';
import { creditGrants, journalEntries, tenants } from '../../db/schema/index.js';
import { accountBalance, accounts, appendEntry, grantPostings } from '../../src/ledger/journal.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/**
 * 0007_backfill_ledger: a database that ran before the ledger existed (0005) holds grants and
 * charges with no entry. Migrating writes each its entry once, so a balance rebuilt from the book
 * counts them.
 */

const BEFORE_BACKFILL = '0006_spend_parked';

/** Migrates `handle` with the committed migrations up to and including `lastTag`. */
async function migrateUpTo(handle: DbHandle, lastTag: string): Promise<void> {
  const folder = await mkdtemp(join(tmpdir(), 'sg-migrations-'));
  try {
    await cp(migrationsFolder(), folder, { recursive: true });
    const journalPath = join(folder, 'meta', '_journal.json');
    const journal = JSON.parse(await readFile(journalPath, 'utf8')) as { entries: { tag: string }[] };
    const last = journal.entries.findIndex((entry) => entry.tag === lastTag);
    expect(last).toBeGreaterThan(0);
    journal.entries = journal.entries.slice(0, last + 1);
    await writeFile(journalPath, JSON.stringify(journal));
    if (handle.engine === 'postgres') {
      const { migrate } = await import('drizzle-orm/postgres-js/migrator');
      await migrate(handle.db as never, { migrationsFolder: folder });
    } else {
      const { migrate } = await import('drizzle-orm/pglite/migrator');
      await migrate(handle.db as never, { migrationsFolder: folder });
    }
  } finally {
    await rm(folder, { recursive: true, force: true });
  }
}

describe('the ledger backfill migration', () => {
  let database: TestDatabase;
  const at = new Date('2026-10-01T12:00:00Z');

  beforeAll(async () => {
    database = await createTestDatabase(inject('databaseUrl'), { migrate: false });
    await migrateUpTo(database.handle, BEFORE_BACKFILL);
    const db = database.handle.db;
    await db.insert(tenants).values([
      { id: 'ten_old', name: 'Old', tier: 4 },
      { id: 'ten_mixed', name: 'Mixed', tier: 4 },
    ]);
    await db.insert(creditGrants).values([
      {
        id: 'grt_old_1',
        tenantId: 'ten_old',
        amountMicro: 5_000_000n,
        reason: 'r',
        grantedBy: 'admin',
        createdAt: at,
      },
      {
        id: 'grt_old_2',
        tenantId: 'ten_old',
        amountMicro: 1_000n,
        reason: 'r',
        grantedBy: 'admin',
        createdAt: at,
      },
      // Granted after the ledger existed: it has its entry already.
      {
        id: 'grt_new',
        tenantId: 'ten_mixed',
        amountMicro: 700n,
        reason: 'r',
        grantedBy: 'admin',
        createdAt: at,
      },
    ]);
    await db.transaction((tx) =>
      appendEntry(tx, {
        tenantId: 'ten_mixed',
        kind: 'grant',
        reference: 'grt_new',
        postings: grantPostings('ten_mixed', 700n),
      }),
    );
    // The spend table as it stood at 0006 (later migrations add columns the schema now names).
    const spendRow = (reservationId: string, costMicro: bigint, free: boolean, settled: boolean) =>
      sql`(${reservationId}, 'ten_old', 'key_1', 'standard', 3, 7, ${costMicro}, ${free}, ${settled}, ${at.toISOString()}::timestamptz, ${settled ? at.toISOString() : null}::timestamptz)`;
    await db.execute(
      sql`insert into spend (reservation_id, tenant_id, key_id, pool, prompt_tokens, completion_tokens, cost_micro, free, settled, created_at, settled_at) values ${sql.join(
        [
          spendRow('res_paid_1', 120n, false, true),
          spendRow('res_paid_2', 80n, false, true),
          // Metered, not charged: no entry.
          spendRow('res_free', 50n, true, true),
          spendRow('res_zero', 0n, false, true),
          // Not settled: its charge is not applied yet, so the book must not hold it.
          spendRow('res_unsettled', 30n, false, false),
        ],
        sql`, `,
      )}`,
    );
    await database.handle.migrate();
  });
  afterAll(() => database.drop());

  it('writes the entry of every grant and every settled charge that had none, with their postings', async () => {
    const db = database.handle.db;
    expect(await accountBalance(db, accounts.available('ten_old'))).toBe(5_001_000n - 200n);
    expect(await accountBalance(db, accounts.spent('ten_old'))).toBe(200n);
    expect(await accountBalance(db, accounts.available('ten_mixed'))).toBe(700n);
    expect(await accountBalance(db, accounts.grantsIssued)).toBe(-5_001_700n);
    const kinds = await db
      .select({ kind: journalEntries.kind, reference: journalEntries.reference })
      .from(journalEntries)
      .where(eq(journalEntries.tenantId, 'ten_old'));
    expect(kinds.map((entry) => `${entry.kind}:${entry.reference}`).sort()).toEqual([
      'grant:grt_old_1',
      'grant:grt_old_2',
      'spend:res_paid_1',
      'spend:res_paid_2',
    ]);
    const [dated] = await db
      .select({ createdAt: journalEntries.createdAt })
      .from(journalEntries)
      .where(and(eq(journalEntries.kind, 'spend'), eq(journalEntries.reference, 'res_paid_1')));
    expect(dated?.createdAt.toISOString()).toBe(at.toISOString());
  });

  it('leaves an entry that existed alone, and adds nothing when run again', async () => {
    const db = database.handle.db;
    const count = async () =>
      Number((await db.select({ n: sql<string>`count(*)::text` }).from(journalEntries))[0]?.n);
    const before = await count();
    expect(before).toBe(5);
    const backfill = await readFile(join(migrationsFolder(), '0007_backfill_ledger.sql'), 'utf8');
    for (const statement of backfill.split('--> statement-breakpoint')) {
      await db.execute(sql.raw(statement));
    }
    expect(await count()).toBe(before);
    expect(await accountBalance(db, accounts.available('ten_mixed'))).toBe(700n);
  });
});
