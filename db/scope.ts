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

/** Bench-only (SPICEGATE_BENCH_RLS_BYPASS): work runs as the login role, with no transaction added. */
export function bypassRowLevelSecurity(db: Db): void {
  bypassed.add(db);
}

/** `work` in a transaction as TENANT_ROLE, seeing only `tenantId`'s rows. */
export function asTenant<T>(db: Db, tenantId: string, work: (tx: Db) => Promise<T>): Promise<T> {
  if (bypassed.has(db)) return work(db);
  return db.transaction(async (tx) => {
    await tx.execute(
      sql`select set_config('role', ${TENANT_ROLE}, true), set_config('app.current_tenant', ${tenantId}, true)`,
    );
    return work(tx);
  });
}

/**
 * `work` in a transaction as TENANT_ROLE with no tenant, allowed to read the one API key whose
 * lookup prefix is `prefix` and its tenant (the policies `key_lookup` and `key_owner`): how a
 * presented key finds its tenant before any tenant is known.
 */
export function asKeyLookup<T>(db: Db, prefix: string, work: (tx: Db) => Promise<T>): Promise<T> {
  if (bypassed.has(db)) return work(db);
  return db.transaction(async (tx) => {
    await tx.execute(
      sql`select set_config('role', ${TENANT_ROLE}, true), set_config('app.key_prefix', ${prefix}, true)`,
    );
    return work(tx);
  });
}

/** `work` in a transaction as ADMIN_ROLE: cross-tenant platform work. */
export function asAdmin<T>(db: Db, work: (tx: Db) => Promise<T>): Promise<T> {
  if (bypassed.has(db)) return work(db);
  return db.transaction(async (tx) => {
    await tx.execute(sql`select set_config('role', ${ADMIN_ROLE}, true)`);
    return work(tx);
  });
}

/** A tenant's work when `tenantId` is given, otherwise the admin's (an admin naming a row by id alone). */
export function asScope<T>(db: Db, tenantId: string | undefined, work: (tx: Db) => Promise<T>): Promise<T> {
  return tenantId === undefined ? asAdmin(db, work) : asTenant(db, tenantId, work);
}
