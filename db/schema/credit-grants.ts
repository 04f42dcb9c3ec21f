import { bigint, index, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

/**
 * Credits granted to a tenant (an admin grant; later a minted payment), one row per grant id, so
 * granting twice with the same id changes nothing. The store's balance is raised by the same grant
 * id (credit.v2 applies a grant at most once).
 */
export const creditGrants = pgTable(
  'credit_grants',
  {
    id: text('id').primaryKey(),
    tenantId: text('tenant_id').notNull(),
    amountMicro: bigint('amount_micro', { mode: 'bigint' }).notNull(),
    reason: text('reason').notNull(),
    /** The caller's subject (`admin`, a JWT `sub`). */
    grantedBy: text('granted_by').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull(),
  },
  (table) => [index('credit_grants_tenant_idx').on(table.tenantId, table.createdAt)],
);

export type CreditGrantRow = typeof creditGrants.$inferSelect;
