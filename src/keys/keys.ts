import { and, asc, count, eq, gt, isNull, ne, or, sql } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import { type ApiKeyRow, apiKeys, tenants } from '../../db/schema/index.js';
import { asScope, asTenant } from '../../db/scope.js';
import { type AuditActor, appendAudit, SYSTEM_ACTOR } from '../audit/audit.js';
import { AppError } from '../errors.js';
import { newId } from '../ids.js';
import type { Services } from '../services.js';
import { generateKey, hashSecret, newSalt } from './format.js';

/** DESIGN.md §6: sandbox keys are limited and free; live keys get 60 requests/min unless set. */
export const SANDBOX_LIMITS = { rpmLimit: 10, tpdLimit: 10_000 } as const;
export const LIVE_DEFAULT_RPM = 60;

/** A key as listings show it: never the hash, the salt or the secret. */
export interface ApiKeyView {
  id: string;
  tenantId: string;
  name: string;
  prefix: string;
  sandbox: boolean;
  scopes: string[];
  rpmLimit: number | null;
  tpdLimit: number | null;
  monthlyCapMicro: string | null;
  createdAt: string;
  revokedAt: string | null;
  lastUsedAt: string | null;
}

export interface CreateKeyInput {
  name: string;
  sandbox?: boolean | undefined;
  scopes?: string[] | undefined;
  rpmLimit?: number | undefined;
  tpdLimit?: number | undefined;
  monthlyCapMicro?: string | undefined;
}

export async function createKey(
  services: Services,
  tenantId: string,
  input: CreateKeyInput,
  by: AuditActor = SYSTEM_ACTOR,
): Promise<{ id: string; key: string; prefix: string }> {
  const created = await asTenant(services.db, tenantId, async (tx) => {
    const inserted = await insertKey(tx, services, tenantId, input, undefined);
    await appendAudit(tx, {
      by,
      tenantId,
      action: 'key.create',
      target: inserted.id,
      summary: { prefix: inserted.prefix, sandbox: input.sandbox ?? false },
      at: new Date(services.clock.now()),
    });
    return inserted;
  });
  await announce(services);
  services.log.info(
    { keyId: created.id, tenantId, prefix: created.prefix, sandbox: input.sandbox ?? false },
    'API key created',
  );
  return created;
}

/**
 * Inserts a key inside the caller's transaction, one creation per tenant at a time, so concurrent
 * creations cannot both pass the active-key limit. `replacing` (a rotation) is not counted.
 */
async function insertKey(
  tx: Db,
  services: Services,
  tenantId: string,
  input: CreateKeyInput,
  replacing: string | undefined,
): Promise<{ id: string; key: string; prefix: string }> {
  const sandbox = input.sandbox ?? false;
  const limits = sandbox
    ? {
        rpmLimit: Math.min(input.rpmLimit ?? SANDBOX_LIMITS.rpmLimit, SANDBOX_LIMITS.rpmLimit),
        tpdLimit: Math.min(input.tpdLimit ?? SANDBOX_LIMITS.tpdLimit, SANDBOX_LIMITS.tpdLimit),
        monthlyCapMicro: null,
      }
    : {
        rpmLimit: input.rpmLimit ?? LIVE_DEFAULT_RPM,
        tpdLimit: input.tpdLimit ?? null,
        monthlyCapMicro: input.monthlyCapMicro === undefined ? null : BigInt(input.monthlyCapMicro),
      };
  const generated = generateKey(sandbox);
  const salt = newSalt();
  const { version, secret: pepper } = services.keys.peppers.current;
  const id = newId('key');
  const now = new Date(services.clock.now());

  // One key creation per tenant at a time (an advisory lock: the tenant role may not lock the
  // tenant's row), so concurrent creations cannot both pass the active-key limit.
  await tx.execute(sql`select pg_advisory_xact_lock(hashtext(${`keys:${tenantId}`}))`);
  const [tenant] = await tx.select({ id: tenants.id }).from(tenants).where(eq(tenants.id, tenantId));
  if (tenant === undefined) throw new AppError('not_found', `No tenant ${tenantId}`);
  const counted = replacing === undefined ? isActive(now) : and(isActive(now), ne(apiKeys.id, replacing));
  const [active] = await tx
    .select({ n: count() })
    .from(apiKeys)
    .where(and(eq(apiKeys.tenantId, tenantId), counted));
  const max = services.config.apiKeysMaxActive;
  if ((active?.n ?? 0) >= max) {
    throw new AppError(
      'conflict',
      `Tenant ${tenantId} already has ${max} active keys (the maximum); revoke one first`,
      {
        maxActiveKeys: max,
      },
    );
  }
  await tx.insert(apiKeys).values({
    id,
    tenantId,
    name: input.name,
    prefix: generated.prefix,
    salt: salt.toString('base64'),
    hash: hashSecret(pepper, salt, generated.secret).toString('base64'),
    pepperVersion: version,
    sandbox,
    scopes: input.scopes ?? [],
    ...limits,
    createdAt: now,
  });
  return { id, key: generated.key, prefix: generated.prefix };
}

/**
 * Tells every instance's key cache that something changed. After a committed change a failure
 * here is logged, not thrown: the change happened, and caches expire on their own (negative
 * entries within 5 s).
 */
export async function announce(services: Services): Promise<void> {
  try {
    await services.keys.changed();
  } catch (error) {
    services.keys.forgetAll();
    services.log.error(
      { err: error },
      'the keys change counter could not be moved: other instances see the change late',
    );
  }
}

export async function listKeys(services: Services, tenantId: string): Promise<ApiKeyView[]> {
  const rows = await asTenant(services.db, tenantId, (tx) =>
    tx
      .select()
      .from(apiKeys)
      .where(eq(apiKeys.tenantId, tenantId))
      .orderBy(asc(apiKeys.createdAt), asc(apiKeys.id)),
  );
  return rows.map(toView);
}

/**
 * The by-id calls below take the tenant the key must belong to, or `undefined` for any tenant: an
 * admin may name a key alone, since key ids are global (DESIGN.md §6).
 */
export async function getKey(
  services: Services,
  tenantId: string | undefined,
  id: string,
): Promise<ApiKeyView> {
  return toView(await asScope(services.db, tenantId, (tx) => findKey(tx, tenantId, id)));
}

export async function revokeKey(
  services: Services,
  tenantId: string | undefined,
  id: string,
  by: AuditActor = SYSTEM_ACTOR,
): Promise<ApiKeyView> {
  const now = new Date(services.clock.now());
  const { row, updated } = await asScope(services.db, tenantId, async (tx) => {
    const row = await findKey(tx, tenantId, id, 'for update');
    const [updated] = await tx
      .update(apiKeys)
      .set({ revokedAt: now })
      .where(and(eq(apiKeys.id, row.id), or(isNull(apiKeys.revokedAt), gt(apiKeys.revokedAt, now))))
      .returning();
    // A key already revoked is left as it was: nothing to record.
    if (updated !== undefined) {
      await appendAudit(tx, {
        by,
        tenantId: row.tenantId,
        action: 'key.revoke',
        target: row.id,
        summary: { revokedAt: { before: row.revokedAt?.toISOString() ?? null, after: now.toISOString() } },
        at: now,
      });
    }
    return { row, updated };
  });
  await announce(services);
  services.log.info({ keyId: id, tenantId: row.tenantId }, 'API key revoked');
  return toView(updated ?? row);
}

/**
 * A new key with the same settings; the old one is revoked now, or after a grace window (never
 * later than it already was). One transaction: either both happen or neither.
 */
export async function rotateKey(
  services: Services,
  tenantId: string | undefined,
  input: { id: string; graceSeconds?: number | undefined },
  by: AuditActor = SYSTEM_ACTOR,
): Promise<{ id: string; key: string; prefix: string; tenantId: string; oldKeyRevokedAt: string }> {
  const now = services.clock.now();
  const result = await asScope(services.db, tenantId, async (tx) => {
    const [old] = await tx.select().from(apiKeys).where(ofTenant(tenantId, input.id)).for('update');
    if (old === undefined) throw new AppError('not_found', `No key ${input.id}`);
    if (old.revokedAt !== null && old.revokedAt.getTime() <= now)
      throw new AppError('conflict', `Key ${input.id} is revoked`);
    const graceEnd = now + (input.graceSeconds ?? 0) * 1000;
    const revokeAt = new Date(
      old.revokedAt === null ? graceEnd : Math.min(graceEnd, old.revokedAt.getTime()),
    );
    await tx.update(apiKeys).set({ revokedAt: revokeAt }).where(eq(apiKeys.id, old.id));
    const created = await insertKey(
      tx,
      services,
      old.tenantId,
      {
        name: old.name,
        sandbox: old.sandbox,
        scopes: old.scopes,
        ...(old.rpmLimit === null ? {} : { rpmLimit: old.rpmLimit }),
        ...(old.tpdLimit === null ? {} : { tpdLimit: old.tpdLimit }),
        ...(old.monthlyCapMicro === null ? {} : { monthlyCapMicro: old.monthlyCapMicro.toString() }),
      },
      old.id,
    );
    await appendAudit(tx, {
      by,
      tenantId: old.tenantId,
      action: 'key.rotate',
      target: old.id,
      summary: { newKeyId: created.id, prefix: created.prefix, oldKeyRevokedAt: revokeAt.toISOString() },
      at: new Date(now),
    });
    return { ...created, tenantId: old.tenantId, oldKeyRevokedAt: revokeAt.toISOString() };
  });
  await announce(services);
  services.log.info(
    { keyId: input.id, newKeyId: result.id, tenantId: result.tenantId, revokeAt: result.oldKeyRevokedAt },
    'API key rotated',
  );
  return result;
}

export async function updateKey(
  services: Services,
  tenantId: string | undefined,
  input: {
    id: string;
    rpmLimit?: number | null | undefined;
    tpdLimit?: number | null | undefined;
    monthlyCapMicro?: string | null | undefined;
  },
  by: AuditActor = SYSTEM_ACTOR,
): Promise<ApiKeyView> {
  const { row, updated } = await asScope(services.db, tenantId, async (tx) => {
    const row = await findKey(tx, tenantId, input.id, 'for update');
    const changes = keyChanges(row, input);
    // Nothing to change (no field given, or only a cap a sandbox key cannot have): no write, no row.
    if (Object.keys(changes).length === 0) return { row, updated: undefined };
    const [updated] = await tx.update(apiKeys).set(changes).where(eq(apiKeys.id, row.id)).returning();
    if (updated === undefined) throw new Error(`key ${row.id} vanished under its lock`);
    await appendAudit(tx, {
      by,
      tenantId: row.tenantId,
      action: 'key.update',
      target: row.id,
      summary: { before: limits(row), after: limits(updated) },
      at: new Date(services.clock.now()),
    });
    return { row, updated };
  });
  if (updated !== undefined) await announce(services);
  return toView(updated ?? row);
}

/** The limits key.update may change, within a sandbox key's ceilings. */
function keyChanges(
  row: ApiKeyRow,
  input: {
    rpmLimit?: number | null | undefined;
    tpdLimit?: number | null | undefined;
    monthlyCapMicro?: string | null | undefined;
  },
): Partial<ApiKeyRow> {
  const changes: Partial<ApiKeyRow> = {};
  if (input.rpmLimit !== undefined)
    changes.rpmLimit = row.sandbox
      ? Math.min(input.rpmLimit ?? SANDBOX_LIMITS.rpmLimit, SANDBOX_LIMITS.rpmLimit)
      : input.rpmLimit;
  if (input.tpdLimit !== undefined)
    changes.tpdLimit = row.sandbox
      ? Math.min(input.tpdLimit ?? SANDBOX_LIMITS.tpdLimit, SANDBOX_LIMITS.tpdLimit)
      : input.tpdLimit;
  if (input.monthlyCapMicro !== undefined && !row.sandbox) {
    changes.monthlyCapMicro = input.monthlyCapMicro === null ? null : BigInt(input.monthlyCapMicro);
  }
  return changes;
}

function limits(row: ApiKeyRow) {
  return {
    rpmLimit: row.rpmLimit,
    tpdLimit: row.tpdLimit,
    monthlyCapMicro: row.monthlyCapMicro === null ? null : row.monthlyCapMicro.toString(),
  };
}

/** The key; `lock` (in a transaction) holds it for the change that follows. */
async function findKey(
  tx: Db,
  tenantId: string | undefined,
  id: string,
  lock: 'for update' | 'no lock' = 'no lock',
): Promise<ApiKeyRow> {
  const query = tx.select().from(apiKeys).where(ofTenant(tenantId, id)).limit(1);
  const [row] = await (lock === 'for update' ? query.for('update') : query);
  // Another tenant's key is "not found", exactly like a key that does not exist.
  if (row === undefined) throw new AppError('not_found', `No key ${id}`);
  return row;
}

/** The key `id`, within `tenantId` when one is given. */
function ofTenant(tenantId: string | undefined, id: string) {
  return tenantId === undefined
    ? eq(apiKeys.id, id)
    : and(eq(apiKeys.id, id), eq(apiKeys.tenantId, tenantId));
}

function isActive(now: Date) {
  return or(isNull(apiKeys.revokedAt), gt(apiKeys.revokedAt, now));
}

function toView(row: ApiKeyRow): ApiKeyView {
  return {
    id: row.id,
    tenantId: row.tenantId,
    name: row.name,
    prefix: row.prefix,
    sandbox: row.sandbox,
    scopes: row.scopes,
    rpmLimit: row.rpmLimit,
    tpdLimit: row.tpdLimit,
    monthlyCapMicro: row.monthlyCapMicro === null ? null : row.monthlyCapMicro.toString(),
    createdAt: row.createdAt.toISOString(),
    revokedAt: row.revokedAt?.toISOString() ?? null,
    lastUsedAt: row.lastUsedAt?.toISOString() ?? null,
  };
}
