import { sql } from 'drizzle-orm';
import { bigint, boolean, check, pgTable, smallint, text, timestamp } from 'drizzle-orm/pg-core';

export const tenants = pgTable(
  'tenants',
  {
    id: text('id').primaryKey(),
    name: text('name').notNull(),
    /** 1–9: tiers 1–3 free, 4–6 pro, 7–9 enterprise (DESIGN.md §6). */
    tier: smallint('tier').notNull(),
    /** Monthly spend cap in micro-credits; null means no cap beyond the balance. */
    monthlyCapMicro: bigint('monthly_cap_micro', { mode: 'bigint' }),
    frozen: boolean('frozen').notNull().default(false),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (table) => [
    check('tenants_tier_range', sql`${table.tier} between 1 and 9`),
    check('tenants_monthly_cap_nonnegative', sql`${table.monthlyCapMicro} >= 0`),
  ],
);

export type TenantRow = typeof tenants.$inferSelect;
