import { sql } from 'drizzle-orm';
import { bigint, check, index, pgTable, text, timestamp, unique } from 'drizzle-orm/pg-core';

/** What an entry records; with `reference`, it names the event the entry was written for. */
export const JOURNAL_KINDS = ['grant', 'spend', 'payment', 'refund', 'adjustment'] as const;
export type JournalKind = (typeof JOURNAL_KINDS)[number];

/**
 * The book of record (docs/ledger.md): one entry per money event, unique by (kind, reference) —
 * the grant id, reservation id or payment id — so writing an event twice adds nothing. Entries and
 * postings are append-only and every entry's postings sum to zero; the migration's triggers make
 * the database refuse anything else.
 */
export const journalEntries = pgTable(
  'journal_entries',
  {
    id: bigint('id', { mode: 'bigint' }).primaryKey().generatedAlwaysAsIdentity(),
    tenantId: text('tenant_id').notNull(),
    kind: text('kind').$type<JournalKind>().notNull(),
    reference: text('reference').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (table) => [
    unique('journal_entries_kind_reference_key').on(table.kind, table.reference),
    index('journal_entries_tenant_idx').on(table.tenantId, table.createdAt),
    check(
      'journal_entries_kind_check',
      sql`${table.kind} in ('grant', 'spend', 'payment', 'refund', 'adjustment')`,
    ),
  ],
);

/** One line of an entry: a signed amount on an account (`tenant:<id>:available`, …). */
export const postings = pgTable(
  'postings',
  {
    id: bigint('id', { mode: 'bigint' }).primaryKey().generatedAlwaysAsIdentity(),
    entryId: bigint('entry_id', { mode: 'bigint' })
      .notNull()
      .references(() => journalEntries.id),
    account: text('account').notNull(),
    amountMicro: bigint('amount_micro', { mode: 'bigint' }).notNull(),
  },
  (table) => [
    index('postings_entry_idx').on(table.entryId),
    index('postings_account_idx').on(table.account),
    // A posting of nothing says nothing; an entry without money is not written at all.
    check('postings_amount_nonzero', sql`${table.amountMicro} <> 0`),
  ],
);

export type JournalEntryRow = typeof journalEntries.$inferSelect;
export type PostingRow = typeof postings.$inferSelect;
