import { and, asc, count, eq, gt, isNull, or } from 'drizzle-orm';
import { type ApiKeyRow, apiKeys, tenants } from '../../db/schema/index.js';
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

  await services.db.transaction(async (tx) => {
    // Serialises creations per tenant, so two at once cannot both pass the limit.
    const [tenant] = await tx
      .select({ id: tenants.id })
      .from(tenants)
      .where(eq(tenants.id, tenantId))
      .for('update');
    if (tenant === undefined) throw new AppError('not_found', `No tenant ${tenantId}`);
    const [active] = await tx
      .select({ n: count() })
      .from(apiKeys)
      .where(and(eq(apiKeys.tenantId, tenantId), isActive(now)));
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
  });
  // A prefix may sit in another instance's negative cache.
  await services.keys.changed();
  services.log.info({ keyId: id, tenantId, prefix: generated.prefix, sandbox }, 'API key created');
  return { id, key: generated.key, prefix: generated.prefix };
}

export async function listKeys(services: Services, tenantId: string): Promise<ApiKeyView[]> {
  const rows = await services.db
    .select()
    .from(apiKeys)
    .where(eq(apiKeys.tenantId, tenantId))
    .orderBy(asc(apiKeys.createdAt), asc(apiKeys.id));
  return rows.map(toView);
}

export async function getKey(services: Services, tenantId: string, id: string): Promise<ApiKeyView> {
  return toView(await findKey(services, tenantId, id));
}

export async function revokeKey(services: Services, tenantId: string, id: string): Promise<ApiKeyView> {
  const row = await findKey(services, tenantId, id);
  const now = new Date(services.clock.now());
  const [updated] = await services.db
    .update(apiKeys)
    .set({ revokedAt: now })
    .where(and(eq(apiKeys.id, row.id), or(isNull(apiKeys.revokedAt), gt(apiKeys.revokedAt, now))))
    .returning();
  await services.keys.changed();
  services.log.info({ keyId: id, tenantId }, 'API key revoked');
  return toView(updated ?? row);
}

/** A new key with the same settings; the old one is revoked now, or after a grace window. */
export async function rotateKey(
  services: Services,
  tenantId: string,
  input: { id: string; graceSeconds?: number | undefined },
): Promise<{ id: string; key: string; prefix: string; oldKeyRevokedAt: string }> {
  const old = await findKey(services, tenantId, input.id);
  const now = services.clock.now();
  if (old.revokedAt !== null && old.revokedAt.getTime() <= now) {
    throw new AppError('conflict', `Key ${input.id} is revoked`);
  }
  const revokeAt = new Date(now + (input.graceSeconds ?? 0) * 1000);
  await services.db.update(apiKeys).set({ revokedAt: revokeAt }).where(eq(apiKeys.id, old.id));
  const created = await createKey(services, tenantId, {
    name: old.name,
    sandbox: old.sandbox,
    scopes: old.scopes,
    ...(old.rpmLimit === null ? {} : { rpmLimit: old.rpmLimit }),
    ...(old.tpdLimit === null ? {} : { tpdLimit: old.tpdLimit }),
    ...(old.monthlyCapMicro === null ? {} : { monthlyCapMicro: old.monthlyCapMicro.toString() }),
  }).catch(async (error: unknown) => {
    // Nothing half-done: the old key keeps working if the new one cannot be made.
    await services.db.update(apiKeys).set({ revokedAt: old.revokedAt }).where(eq(apiKeys.id, old.id));
    throw error;
  });
  return { ...created, oldKeyRevokedAt: revokeAt.toISOString() };
}

export async function updateKey(
  services: Services,
  tenantId: string,
  input: {
    id: string;
    rpmLimit?: number | null | undefined;
    tpdLimit?: number | null | undefined;
    monthlyCapMicro?: string | null | undefined;
  },
): Promise<ApiKeyView> {
  const row = await findKey(services, tenantId, input.id);
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
  const [updated] = await services.db.update(apiKeys).set(changes).where(eq(apiKeys.id, row.id)).returning();
  await services.keys.changed();
  return toView(updated ?? row);
}

async function findKey(services: Services, tenantId: string, id: string): Promise<ApiKeyRow> {
  const [row] = await services.db
    .select()
    .from(apiKeys)
    .where(and(eq(apiKeys.id, id), eq(apiKeys.tenantId, tenantId)))
    .limit(1);
  // Another tenant's key is "not found", exactly like a key that does not exist.
  if (row === undefined) throw new AppError('not_found', `No key ${id}`);
  return row;
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
