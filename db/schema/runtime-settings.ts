import { sql } from 'drizzle-orm';
import { bigint, boolean, check, pgTable, text, timestamp, unique } from 'drizzle-orm/pg-core';
import { tenants } from './tenants.js';

/**
 * Prices set at runtime (`admin.pricing.set`), in micro-credits per 1,000 tokens: a global price
 * per pool (tenant_id null) and per-tenant overrides. A pool without a row costs its built-in
 * price (POOL_PRICES over src/pricing/pricing.ts DEFAULT_PRICES). Every instance keeps a copy in
 * memory, reloaded when the `pool_prices` change counter moves (src/pricing/price-book.ts).
 */
export const poolPrices = pgTable(
  'pool_prices',
  {
    pool: text('pool').notNull(),
    /** Null: the global price of the pool. */
    tenantId: text('tenant_id').references(() => tenants.id, { onDelete: 'cascade' }),
    microPer1kTokens: bigint('micro_per_1k_tokens', { mode: 'bigint' }).notNull(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (table) => [
    // NULLS NOT DISTINCT: one global row per pool as well as one per (pool, tenant).
    unique('pool_prices_pool_tenant_unique').on(table.pool, table.tenantId).nullsNotDistinct(),
    check('pool_prices_price_positive', sql`${table.microPer1kTokens} > 0`),
  ],
);

export type PoolPriceRow = typeof poolPrices.$inferSelect;

/**
 * Feature switches set at runtime (`admin.flags.set`): global (tenant_id null) and per tenant; a
 * tenant's row overrides the global one. No row: the feature is on (payments: unless PAYMENTS=off).
 */
export const featureFlags = pgTable(
  'feature_flags',
  {
    flag: text('flag').notNull(),
    /** Null: the global switch. */
    tenantId: text('tenant_id').references(() => tenants.id, { onDelete: 'cascade' }),
    enabled: boolean('enabled').notNull(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (table) => [
    unique('feature_flags_flag_tenant_unique').on(table.flag, table.tenantId).nullsNotDistinct(),
    check('feature_flags_flag_known', sql`${table.flag} in ('payments', 'inference', 'keys')`),
  ],
);

export type FeatureFlagRow = typeof featureFlags.$inferSelect;
