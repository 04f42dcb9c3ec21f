import { jsonb, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

/**
 * Public halves of the gateway's signing keys (private keys never reach the database; they stay
 * behind the Signer port). A key is published from `createdAt`, signs from `activatedAt`, stays
 * published until `expiresAt` (set when a newer key takes over: its last token has expired and
 * every JWKS cache has seen the newer key), and is marked `retiredAt` once that has passed.
 */
export const signingKeys = pgTable('signing_keys', {
  kid: text('kid').primaryKey(),
  alg: text('alg').notNull(),
  publicJwk: jsonb('public_jwk').$type<Record<string, string>>().notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull(),
  activatedAt: timestamp('activated_at', { withTimezone: true }).notNull(),
  expiresAt: timestamp('expires_at', { withTimezone: true }),
  retiredAt: timestamp('retired_at', { withTimezone: true }),
});

export type SigningKeyRow = typeof signingKeys.$inferSelect;
