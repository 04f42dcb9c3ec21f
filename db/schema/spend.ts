import { bigint, boolean, index, integer, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

/**
 * One row per admitted request, keyed by its reservation (so writing it twice changes nothing).
 * `settled` is false when the store could not be reached at finalize: the settlement job retries
 * it until the store confirms, so no charge is ever lost — unless the store refuses the row
 * outright, which parks it (`parkedReason`) instead of retrying it forever.
 */
export const spend = pgTable(
  'spend',
  {
    reservationId: text('reservation_id').primaryKey(),
    tenantId: text('tenant_id').notNull(),
    keyId: text('key_id').notNull(),
    /** The request's `user` and `channel` (null when it named none), so usage can be cut by them. */
    userId: text('user_id'),
    channelId: text('channel_id'),
    pool: text('pool').notNull(),
    promptTokens: integer('prompt_tokens').notNull(),
    completionTokens: integer('completion_tokens').notNull(),
    /** What the request cost (the actual usage, priced); after settlement what was charged. */
    costMicro: bigint('cost_micro', { mode: 'bigint' }).notNull(),
    /** A sandbox request: metered at its notional cost (`costMicro`) but not charged. */
    free: boolean('free').notNull().default(false),
    settled: boolean('settled').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull(),
    settledAt: timestamp('settled_at', { withTimezone: true }),
    /** Why the store refused to settle this row (INVALID_INPUT): parked, never retried; an operator looks. */
    parkedReason: text('parked_reason'),
  },
  (table) => [
    index('spend_tenant_idx').on(table.tenantId, table.createdAt),
    index('spend_unsettled_idx').on(table.settled),
  ],
);

export type SpendRow = typeof spend.$inferSelect;
