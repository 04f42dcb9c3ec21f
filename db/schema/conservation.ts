import { sql } from 'drizzle-orm';
import { bigint, check, index, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

/**
 * What the conservation check does about a confirmed drift: `reported` (a check that does not
 * repair, e.g. admin.conservation), `repaired` (the store now holds the book's figures) or
 * `changed` (the repair found the balance moved since it was read and wrote nothing).
 */
export const CONSERVATION_OUTCOMES = ['reported', 'repaired', 'changed'] as const;
export type ConservationOutcome = (typeof CONSERVATION_OUTCOMES)[number];

/**
 * Every drift the conservation check confirmed between the book and the store (docs/ledger.md
 * "Conservation"), with the store's figures before, the book's, and the store's after a repair.
 * Money in micro-credits; the drifts are signed (store − book).
 */
export const conservationChecks = pgTable(
  'conservation_checks',
  {
    id: bigint('id', { mode: 'bigint' }).primaryKey().generatedAlwaysAsIdentity(),
    tenantId: text('tenant_id').notNull(),
    checkedAt: timestamp('checked_at', { withTimezone: true }).notNull(),
    outcome: text('outcome').$type<ConservationOutcome>().notNull(),
    /** What the store lets the tenant spend beyond the book: creditedDrift − committedDrift. */
    driftMicro: bigint('drift_micro', { mode: 'bigint' }).notNull(),
    /** Store credited − book credited. */
    creditedDriftMicro: bigint('credited_drift_micro', { mode: 'bigint' }).notNull(),
    /** (Store committed − outbox) − book spent. */
    committedDriftMicro: bigint('committed_drift_micro', { mode: 'bigint' }).notNull(),
    beforeCreditedMicro: bigint('before_credited_micro', { mode: 'bigint' }).notNull(),
    beforeCommittedMicro: bigint('before_committed_micro', { mode: 'bigint' }).notNull(),
    beforeOutboxMicro: bigint('before_outbox_micro', { mode: 'bigint' }).notNull(),
    beforeReservedMicro: bigint('before_reserved_micro', { mode: 'bigint' }).notNull(),
    bookCreditedMicro: bigint('book_credited_micro', { mode: 'bigint' }).notNull(),
    bookSpentMicro: bigint('book_spent_micro', { mode: 'bigint' }).notNull(),
    /** The store's figures after the repair; null unless `repaired`. */
    afterCreditedMicro: bigint('after_credited_micro', { mode: 'bigint' }),
    afterCommittedMicro: bigint('after_committed_micro', { mode: 'bigint' }),
    afterOutboxMicro: bigint('after_outbox_micro', { mode: 'bigint' }),
    afterReservedMicro: bigint('after_reserved_micro', { mode: 'bigint' }),
  },
  (table) => [
    index('conservation_checks_tenant_idx').on(table.tenantId, table.checkedAt),
    check('conservation_checks_outcome_check', sql`${table.outcome} in ('reported', 'repaired', 'changed')`),
  ],
);

export type ConservationCheckRow = typeof conservationChecks.$inferSelect;
