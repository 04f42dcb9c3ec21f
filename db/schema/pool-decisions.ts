import { bigint, index, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

/**
 * A pool-enforcement decision (DESIGN.md §4): the caller asked for a pool it may not use and was
 * routed to another. One row per such request, keyed by its reservation; `costMicro` is the
 * reservation's estimate at the pool actually used.
 */
export const poolDecisions = pgTable(
  'pool_decisions',
  {
    reservationId: text('reservation_id').primaryKey(),
    tenantId: text('tenant_id').notNull(),
    keyId: text('key_id').notNull(),
    requested: text('requested').notNull(),
    actual: text('actual').notNull(),
    /** `tier` (the tenant's tier does not allow it) or `sandbox`. */
    reason: text('reason').notNull(),
    costMicro: bigint('cost_micro', { mode: 'bigint' }).notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull(),
  },
  (table) => [index('pool_decisions_tenant_idx').on(table.tenantId, table.createdAt)],
);

export type PoolDecisionRow = typeof poolDecisions.$inferSelect;
