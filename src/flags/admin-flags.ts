import { and, asc, eq, isNull, sql } from 'drizzle-orm';
import { featureFlags } from '../../db/schema/index.js';
import { asAdmin } from '../../db/scope.js';
import { type AuditActor, appendAudit, SYSTEM_ACTOR } from '../audit/audit.js';
import type { Services } from '../services.js';
import { getTenant } from '../tenants/tenants.js';
import { FLAGS, type Flag, isFlag } from './feature-flags.js';

/** `admin.flags.get`. */
export interface FlagsView {
  /**
   * Per flag, globally: on or off, and why — set at runtime, the default (on), or the environment
   * (PAYMENTS=off, which no flag overrides).
   */
  flags: { flag: Flag; enabled: boolean; source: 'runtime' | 'default' | 'environment' }[];
  /** Per-tenant flags, beating the global one for that tenant. */
  overrides: { tenantId: string; flag: Flag; enabled: boolean; updatedAt: string }[];
}

/** What is stored now (not this instance's copy, which may be up to a poll behind). */
export async function getFlags(services: Services): Promise<FlagsView> {
  const rows = await asAdmin(services.db, (tx) =>
    tx.select().from(featureFlags).orderBy(asc(featureFlags.tenantId), asc(featureFlags.flag)),
  );
  const global = new Map(rows.filter((row) => row.tenantId === null).map((row) => [row.flag, row.enabled]));
  return {
    flags: FLAGS.map((flag) => {
      if (flag === 'payments' && services.config.payments === 'off')
        return { flag, enabled: false, source: 'environment' as const };
      const set = global.get(flag);
      return set === undefined
        ? { flag, enabled: true, source: 'default' as const }
        : { flag, enabled: set, source: 'runtime' as const };
    }),
    overrides: rows.flatMap((row) =>
      row.tenantId === null || !isFlag(row.flag)
        ? []
        : [
            {
              tenantId: row.tenantId,
              flag: row.flag,
              enabled: row.enabled,
              updatedAt: row.updatedAt.toISOString(),
            },
          ],
    ),
  };
}

export interface FlagChange {
  flag: Flag;
  /** Null: the global flag. */
  tenantId: string | null;
  /** What is now set; null when the call removed it (a tenant follows the global flag again). */
  enabled: boolean | null;
  previous: boolean | null;
}

/**
 * Sets a flag globally or for one tenant (`tenantId`); `enabled: null` removes it (back to the
 * global flag, or to the default: on). Every instance applies it within a second or two.
 */
export async function setFlag(
  services: Services,
  input: { flag: Flag; enabled: boolean | null; tenantId?: string | undefined },
  by: AuditActor = SYSTEM_ACTOR,
): Promise<FlagChange> {
  const { flag, enabled } = input;
  const tenantId = input.tenantId ?? null;
  if (tenantId !== null) await getTenant(services, tenantId);

  const scope = and(
    eq(featureFlags.flag, flag),
    tenantId === null ? isNull(featureFlags.tenantId) : eq(featureFlags.tenantId, tenantId),
  );
  const previous = await asAdmin(services.db, async (tx) => {
    // One setter of a flag at a time, also before its row exists: the audit's `before` is exact.
    await tx.execute(sql`select pg_advisory_xact_lock(hashtext(${`flag:${flag}:${tenantId ?? ''}`}))`);
    const [before] = await tx.select().from(featureFlags).where(scope).for('update');
    const now = new Date(services.clock.now());
    if (enabled === null) await tx.delete(featureFlags).where(scope);
    else {
      await tx
        .insert(featureFlags)
        .values({ flag, tenantId, enabled, updatedAt: now })
        .onConflictDoUpdate({
          target: [featureFlags.flag, featureFlags.tenantId],
          set: { enabled, updatedAt: now },
        });
    }
    await appendAudit(tx, {
      by,
      tenantId,
      action: 'flags.set',
      target: flag,
      summary: { before: before?.enabled ?? null, after: enabled },
      at: now,
    });
    return before?.enabled ?? null;
  });
  await services.flags.changed();
  const change: FlagChange = { flag, tenantId, enabled, previous };
  services.log.info(change, 'feature flag set');
  return change;
}
