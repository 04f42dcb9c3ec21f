import { and, asc, eq, isNull, sql } from 'drizzle-orm';
import { poolPrices } from '../../db/schema/index.js';
import { asAdmin } from '../../db/scope.js';
import { type AuditActor, appendAudit, SYSTEM_ACTOR } from '../audit/audit.js';
import { MAX_AMOUNT_MICRO } from '../budget/bounds.js';
import { AppError } from '../errors.js';
import { largestEstimateTokens } from '../inference/estimate.js';
import type { Services } from '../services.js';
import { getTenant } from '../tenants/tenants.js';
import { costMicro, isPool, POOLS, type Pool } from './pricing.js';

/** `admin.pricing.get`: money as decimal strings (micro-credits per 1,000 tokens). */
export interface PricingView {
  /** Per pool: the global price, whether it was set at runtime, and the default it falls back to. */
  pools: {
    pool: Pool;
    microPer1kTokens: string;
    source: 'runtime' | 'default';
    /** The built-in price, or POOL_PRICES's. */
    defaultMicroPer1kTokens: string;
  }[];
  /** Per-tenant prices, beating the global one for that tenant's requests. */
  overrides: { tenantId: string; pool: Pool; microPer1kTokens: string; updatedAt: string }[];
}

/** What is stored now (not this instance's copy, which may be up to a poll behind). */
export async function getPricing(services: Services): Promise<PricingView> {
  const rows = await asAdmin(services.db, (tx) =>
    tx.select().from(poolPrices).orderBy(asc(poolPrices.tenantId), asc(poolPrices.pool)),
  );
  const defaults = services.config.prices;
  const global = new Map(rows.filter((row) => row.tenantId === null).map((row) => [row.pool, row]));
  return {
    pools: POOLS.map((pool) => {
      const set = global.get(pool);
      return {
        pool,
        microPer1kTokens: (set?.microPer1kTokens ?? defaults[pool]).toString(),
        source: set === undefined ? 'default' : 'runtime',
        defaultMicroPer1kTokens: defaults[pool].toString(),
      };
    }),
    overrides: rows.flatMap((row) =>
      row.tenantId === null || !isPool(row.pool)
        ? []
        : [
            {
              tenantId: row.tenantId,
              pool: row.pool,
              microPer1kTokens: row.microPer1kTokens.toString(),
              updatedAt: row.updatedAt.toISOString(),
            },
          ],
    ),
  };
}

export interface PriceChange {
  pool: Pool;
  /** Null: the global price. */
  tenantId: string | null;
  /** The price now set; null when the call removed it (the pool falls back). */
  microPer1kTokens: string | null;
  previousMicroPer1kTokens: string | null;
}

/**
 * Sets a pool's global price, or a tenant's own (`tenantId`); null removes it, so the pool falls
 * back (a tenant's to the global price, the global one to the default). A price at which the
 * largest request's reservation would pass MAX_AMOUNT_MICRO is refused (400), as POOL_PRICES is at
 * start-up: the engine would refuse every such request. Every instance charges it from its next
 * estimate after its next poll (within a second or two).
 */
export async function setPrice(
  services: Services,
  input: { pool: Pool; microPer1kTokens: bigint | null; tenantId?: string | undefined },
  by: AuditActor = SYSTEM_ACTOR,
): Promise<PriceChange> {
  const { pool, microPer1kTokens: price } = input;
  const tenantId = input.tenantId ?? null;
  if (price !== null) {
    const largest = costMicro(pool, largestEstimateTokens(services.config.maxBodyBytes), {
      ...services.config.prices,
      [pool]: price,
    });
    if (largest > MAX_AMOUNT_MICRO) {
      throw new AppError(
        'invalid_request',
        `Invalid input: at ${price} micro-credits per 1000 tokens, the largest request would reserve more than ${MAX_AMOUNT_MICRO} micro-credits`,
      );
    }
  }
  if (tenantId !== null) await getTenant(services, tenantId);

  const scope = and(
    eq(poolPrices.pool, pool),
    tenantId === null ? isNull(poolPrices.tenantId) : eq(poolPrices.tenantId, tenantId),
  );
  const previous = await asAdmin(services.db, async (tx) => {
    // One setter of a price at a time, also before its row exists: the audit's `before` is exact.
    await tx.execute(sql`select pg_advisory_xact_lock(hashtext(${`price:${pool}:${tenantId ?? ''}`}))`);
    const [before] = await tx.select().from(poolPrices).where(scope).for('update');
    const now = new Date(services.clock.now());
    if (price === null) await tx.delete(poolPrices).where(scope);
    else {
      await tx
        .insert(poolPrices)
        .values({ pool, tenantId, microPer1kTokens: price, updatedAt: now })
        .onConflictDoUpdate({
          target: [poolPrices.pool, poolPrices.tenantId],
          set: { microPer1kTokens: price, updatedAt: now },
        });
    }
    await appendAudit(tx, {
      by,
      tenantId,
      action: 'pricing.set',
      target: pool,
      summary: {
        before: before?.microPer1kTokens.toString() ?? null,
        after: price?.toString() ?? null,
      },
      at: now,
      pool,
    });
    return before?.microPer1kTokens ?? null;
  });
  await services.prices.changed();
  const change: PriceChange = {
    pool,
    tenantId,
    microPer1kTokens: price?.toString() ?? null,
    previousMicroPer1kTokens: previous?.toString() ?? null,
  };
  services.log.info(change, 'pool price set');
  return change;
}
