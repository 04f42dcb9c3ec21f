import { sql } from 'drizzle-orm';
import type { Db } from './types.js';

/*
 * Row-level security (docs/ledger.md, "Tenant isolation"): every table with a tenant column has
 * ENABLE and FORCE ROW LEVEL SECURITY (migration 0013). Application work never runs as the login
 * role: each unit of work is a transaction that first becomes one of two non-owner,
 * non-superuser, non-BYPASSRLS roles with `set_config(…, true)` (= SET LOCAL, gone at commit or
 * rollback, so nothing leaks into the next transaction on a pooled connection):
 * - TENANT_ROLE with `app.current_tenant`: sees and writes that tenant's rows only;
 * - ADMIN_ROLE: the platform's cross-tenant work (operators' reports, background jobs, payment
 *   reports before their tenant is known), through policies of its own.
 * A path that takes neither role runs as the login, which owns nothing at runtime when deployed
 * as docs/deploy.md says, and is refused.
 */

export const TENANT_ROLE = 'spicegate_app';
export const ADMIN_ROLE = 'spicegate_admin';

/** Databases whose scoping is skipped: the bench's "RLS bypassed" variant only (bench:gateway). */
const bypassed = new WeakSet<Db>();

/**
 * Bench-only (SPICEGATE_BENCH_RLS_BYPASS): the scopes keep their transactions (their atomicity
 * is the work's) but take no role, so the login's own rights apply.
 */
export function bypassRowLevelSecurity(db: Db): void {
  bypassed.add(db);
}

/** `work` in a transaction that first sets `settings` for itself only (SET LOCAL). */
function scoped<T>(db: Db, settings: Record<string, string>, work: (tx: Db) => Promise<T>): Promise<T> {
  if (bypassed.has(db)) return db.transaction((tx) => work(tx));
  return db.transaction(async (tx) => {
    await tx.execute(
      sql`select ${sql.join(
        Object.entries(settings).map(([name, value]) => sql`set_config(${name}, ${value}, true)`),
        sql`, `,
      )}`,
    );
    return work(tx);
  });
}

/** `work` in a transaction as TENANT_ROLE, seeing only `tenantId`'s rows. */
export function asTenant<T>(db: Db, tenantId: string, work: (tx: Db) => Promise<T>): Promise<T> {
  return scoped(db, { role: TENANT_ROLE, 'app.current_tenant': tenantId }, work);
}

/**
 * The spend writer's batch: `work` as TENANT_ROLE allowed the spend rows, journal entries and
 * ledger lines of `tenantIds` only (the `spend_batch` policies, migration 0013), so one statement
 * writes the rows of several tenants, each row checked by the database.
 */
export function asSpendBatch<T>(
  db: Db,
  tenantIds: readonly string[],
  work: (tx: Db) => Promise<T>,
): Promise<T> {
  // Tenant ids are [A-Za-z0-9_-] (src/ids.ts): ',' cannot occur in one.
  return scoped(db, { role: TENANT_ROLE, 'app.spend_batch': tenantIds.join(',') }, work);
}

/**
 * `work` in a transaction as TENANT_ROLE with no tenant, allowed to read the one API key whose
 * lookup prefix is `prefix` and its tenant (the policies `key_lookup` and `key_owner`): how a
 * presented key finds its tenant before any tenant is known.
 */
export function asKeyLookup<T>(db: Db, prefix: string, work: (tx: Db) => Promise<T>): Promise<T> {
  return scoped(db, { role: TENANT_ROLE, 'app.key_prefix': prefix }, work);
}

/** `work` in a transaction as ADMIN_ROLE: the platform's work and every admin change. */
export function asAdmin<T>(db: Db, work: (tx: Db) => Promise<T>): Promise<T> {
  return scoped(db, { role: ADMIN_ROLE }, work);
}

/** A tenant's work when `tenantId` is given, otherwise the admin's (an admin naming a row by id alone). */
export function asScope<T>(db: Db, tenantId: string | undefined, work: (tx: Db) => Promise<T>): Promise<T> {
  return tenantId === undefined ? asAdmin(db, work) : asTenant(db, tenantId, work);
}
