import { asc, eq } from 'drizzle-orm';
import { type TenantRow, tenants } from '../../db/schema/index.js';
import { asAdmin, asTenant } from '../../db/scope.js';
import { type AuditActor, appendAudit, SYSTEM_ACTOR } from '../audit/audit.js';
import { AppError } from '../errors.js';
import { newId } from '../ids.js';
import { announce } from '../keys/keys.js';
import type { Services } from '../services.js';

/** A tenant as the API shows it: money as a decimal string, times as ISO 8601. */
export interface Tenant {
  id: string;
  name: string;
  tier: number;
  monthlyCapMicro: string | null;
  frozen: boolean;
  createdAt: string;
}

export async function createTenant(
  services: Services,
  input: { name: string; tier: number },
  by: AuditActor = SYSTEM_ACTOR,
): Promise<Tenant> {
  const id = newId('ten');
  const row = await asAdmin(services.db, async (tx) => {
    const [created] = await tx.insert(tenants).values({ id, name: input.name, tier: input.tier }).returning();
    if (created === undefined) throw new Error('insert into tenants returned no row');
    // The name is free text: it stays out of the trail.
    await appendAudit(tx, {
      by,
      tenantId: created.id,
      action: 'tenant.create',
      target: created.id,
      summary: { tier: created.tier },
      at: new Date(services.clock.now()),
    });
    return created;
  });
  services.log.info({ tenantId: row.id, tier: row.tier }, 'tenant created');
  // A new tenant's book is empty: its store balance starts at 0 now rather than at its first
  // request. Best effort: if the store cannot answer, admission hydrates it later.
  await services.store
    .hydrate({ tenantId: row.id, creditedMicro: 0n, committedMicro: 0n, grants: [] })
    .catch((error: unknown) =>
      services.log.warn({ tenantId: row.id, err: error }, 'tenant balance not hydrated'),
    );
  return toTenant(row);
}

export async function getTenant(services: Services, id: string): Promise<Tenant> {
  const [row] = await asTenant(services.db, id, (tx) =>
    tx.select().from(tenants).where(eq(tenants.id, id)).limit(1),
  );
  if (row === undefined) throw new AppError('not_found', `No tenant ${id}`);
  return toTenant(row);
}

/** Whether the tenant is frozen; false for a tenant that does not exist. */
export async function isTenantFrozen(services: Services, id: string): Promise<boolean> {
  const [row] = await asTenant(services.db, id, (tx) =>
    tx.select({ frozen: tenants.frozen }).from(tenants).where(eq(tenants.id, id)).limit(1),
  );
  return row?.frozen ?? false;
}

/** Tier, monthly cap, freeze. A change reaches every instance's key caches within a second. */
export async function updateTenant(
  services: Services,
  input: {
    id: string;
    tier?: number | undefined;
    monthlyCapMicro?: string | null | undefined;
    frozen?: boolean | undefined;
  },
  by: AuditActor = SYSTEM_ACTOR,
): Promise<Tenant> {
  const now = new Date(services.clock.now());
  const changes: Partial<TenantRow> = { updatedAt: now };
  if (input.tier !== undefined) changes.tier = input.tier;
  if (input.monthlyCapMicro !== undefined) {
    changes.monthlyCapMicro = input.monthlyCapMicro === null ? null : BigInt(input.monthlyCapMicro);
  }
  if (input.frozen !== undefined) changes.frozen = input.frozen;
  const row = await asAdmin(services.db, async (tx) => {
    const [before] = await tx.select().from(tenants).where(eq(tenants.id, input.id)).for('update');
    if (before === undefined) throw new AppError('not_found', `No tenant ${input.id}`);
    const [after] = await tx.update(tenants).set(changes).where(eq(tenants.id, input.id)).returning();
    if (after === undefined) throw new Error(`tenant ${input.id} vanished under its lock`);
    await appendAudit(tx, {
      by,
      tenantId: after.id,
      action:
        after.frozen === before.frozen ? 'tenant.update' : after.frozen ? 'tenant.freeze' : 'tenant.unfreeze',
      target: after.id,
      summary: { before: settings(before), after: settings(after) },
      at: now,
    });
    return after;
  });
  await announce(services);
  services.log.info({ tenantId: row.id, tier: row.tier, frozen: row.frozen }, 'tenant updated');
  return toTenant(row);
}

export async function listTenants(services: Services): Promise<Tenant[]> {
  const rows = await asAdmin(services.db, (tx) =>
    tx.select().from(tenants).orderBy(asc(tenants.createdAt), asc(tenants.id)),
  );
  return rows.map(toTenant);
}

/** What tenants.update can change, as the audit trail records it. */
function settings(row: TenantRow) {
  return {
    tier: row.tier,
    monthlyCapMicro: row.monthlyCapMicro === null ? null : row.monthlyCapMicro.toString(),
    frozen: row.frozen,
  };
}

function toTenant(row: TenantRow): Tenant {
  return {
    id: row.id,
    name: row.name,
    tier: row.tier,
    monthlyCapMicro: row.monthlyCapMicro === null ? null : row.monthlyCapMicro.toString(),
    frozen: row.frozen,
    createdAt: row.createdAt.toISOString(),
  };
}
