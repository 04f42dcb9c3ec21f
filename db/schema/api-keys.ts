import { sql } from 'drizzle-orm';
import { bigint, boolean, check, index, integer, jsonb, pgTable, text, timestamp } from 'drizzle-orm/pg-core';
import { tenants } from './tenants.js';

/**
 * API keys. Never the secret: a unique lookup prefix, a 16-byte random salt and
 * HMAC-SHA256(pepper, salt ‖ secret) with the version of the pepper used (base64).
 */
export const apiKeys = pgTable(
  'api_keys',
  {
    id: text('id').primaryKey(),
    tenantId: text('tenant_id')
      .notNull()
      .references(() => tenants.id),
    name: text('name').notNull(),
    /** `sg_live_XXXXXXXXXXXX` / `sg_test_XXXXXXXXXXXX`: what the caller's key starts with. */
    prefix: text('prefix').notNull().unique(),
    salt: text('salt').notNull(),
    hash: text('hash').notNull(),
    pepperVersion: integer('pepper_version').notNull(),
    sandbox: boolean('sandbox').notNull().default(false),
    scopes: jsonb('scopes').$type<string[]>().notNull().default([]),
    rpmLimit: integer('rpm_limit'),
    tpdLimit: integer('tpd_limit'),
    monthlyCapMicro: bigint('monthly_cap_micro', { mode: 'bigint' }),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    /** Set by revoke, or in the future by rotate with a grace window. */
    revokedAt: timestamp('revoked_at', { withTimezone: true }),
    lastUsedAt: timestamp('last_used_at', { withTimezone: true }),
  },
  (table) => [
    index('api_keys_tenant_idx').on(table.tenantId),
    check(
      'api_keys_limits_nonnegative',
      sql`${table.rpmLimit} >= 0 and ${table.tpdLimit} >= 0 and ${table.monthlyCapMicro} >= 0`,
    ),
  ],
);

export type ApiKeyRow = typeof apiKeys.$inferSelect;
