import { sql } from 'drizzle-orm';
import { bigint, index, integer, jsonb, pgTable, text, timestamp, uniqueIndex } from 'drizzle-orm/pg-core';

/** The chain of platform-wide actions (no tenant): a name no generated tenant id (`ten_…`) can take. */
export const PLATFORM_CHAIN = 'platform';

/**
 * The audit trail (docs/audit.md): one row per change an admin, operator or member made, written in
 * the change's own transaction. Append-only (the migration's trigger refuses UPDATE, DELETE and
 * TRUNCATE for everyone) and hash-chained per `chain` — the tenant, or PLATFORM_CHAIN — by `seq`:
 * `hash` = sha256(`prev_hash` ‖ the row's canonical content), so a row edited or removed by hand
 * breaks the chain at that row (src/audit/audit.ts).
 */
export const auditEvents = pgTable(
  'audit_events',
  {
    id: bigint('id', { mode: 'bigint' }).primaryKey().generatedAlwaysAsIdentity(),
    /** Null for platform-wide actions (a signing-key rotation). */
    tenantId: text('tenant_id'),
    /** The chain the row belongs to: its tenant, or 'platform'. */
    chain: text('chain').notNull().generatedAlwaysAs(sql`coalesce(tenant_id, 'platform')`),
    /** 1, 2, 3 … within the chain, without gaps. */
    seq: integer('seq').notNull(),
    at: timestamp('at', { withTimezone: true, precision: 3 }).notNull(),
    /** Pseudonymous: `act_` + sha256 of the caller's subject, never the subject itself (it may be an e-mail). */
    actor: text('actor').notNull(),
    /** admin | operator | member | system (a job, or code that names no caller). */
    actorRole: text('actor_role').notNull(),
    /** `tenant.create`, `key.revoke`, `credits.grant`, … (AUDIT_ACTIONS). */
    action: text('action').notNull(),
    /** What was acted on: a tenant, key, grant, payment or signing key id. */
    target: text('target').notNull(),
    /** Before/after figures: ids, flags, limits and amounts only — no names, reasons, secrets. */
    summary: jsonb('summary').$type<Record<string, unknown>>().notNull(),
    /** Micro-credits that moved (a grant, a minted payment). */
    amountMicro: bigint('amount_micro', { mode: 'bigint' }),
    pool: text('pool'),
    requestId: text('request_id'),
    /** 64 hex digits; 64 zeros for a chain's first row. */
    prevHash: text('prev_hash').notNull(),
    hash: text('hash').notNull(),
  },
  (table) => [
    uniqueIndex('audit_events_chain_seq_key').on(table.chain, table.seq),
    index('audit_events_chain_at_idx').on(table.chain, table.at),
  ],
);

export type AuditEventRow = typeof auditEvents.$inferSelect;
