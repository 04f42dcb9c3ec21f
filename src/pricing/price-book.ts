import type { Db } from '../../db/index.js';
import { poolPrices } from '../../db/schema/index.js';
import { asAdmin } from '../../db/scope.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../observability/logger.js';
import type { CopyState } from '../settings/watched-copy.js';
import { WatchedCopy } from '../settings/watched-copy.js';
import type { Store } from '../store/typed-store.js';
import { isPool, type Pool, type Prices } from './pricing.js';

/** The change counter `admin.pricing.set` moves (lua/epoch.v1.lua). */
export const PRICES_CHANGES = 'pool_prices';

/** Whole price tables, computed at load, so a request's lookup is one map read. */
export interface PriceTables {
  /** The defaults with the global prices set at runtime over them. */
  global: Prices;
  /** Per tenant with an override: `global` with the tenant's own prices over it. */
  tenants: ReadonlyMap<string, Prices>;
}

/**
 * The prices requests are charged at, from the `pool_prices` table, kept in memory by every
 * instance (src/settings/watched-copy.ts). `defaults`: the built-in table with POOL_PRICES over it,
 * for every pool without a row.
 */
export class PriceBook extends WatchedCopy<PriceTables> {
  constructor(
    db: Db,
    parts: { store: Store; clock: Clock; log: Logger; state?: CopyState<PriceTables> | undefined },
    private readonly defaults: Prices,
  ) {
    super({ ...parts, counter: PRICES_CHANGES, load: () => loadPriceTables(db, defaults) });
  }

  /** A tenant's prices: its overrides, else the global prices, else the defaults. No I/O. */
  pricesFor(tenantId: string): Prices {
    const tables = this.value;
    if (tables === undefined) return this.defaults;
    return tables.tenants.get(tenantId) ?? tables.global;
  }
}

async function loadPriceTables(db: Db, defaults: Prices): Promise<PriceTables> {
  // Every tenant's overrides: platform work.
  const rows = await asAdmin(db, (tx) => tx.select().from(poolPrices));
  const set = (base: Prices, of: typeof rows): Prices => {
    const table: Record<Pool, bigint> = { ...base };
    for (const row of of) if (isPool(row.pool)) table[row.pool] = row.microPer1kTokens;
    return table;
  };
  const global = set(
    defaults,
    rows.filter((row) => row.tenantId === null),
  );
  const byTenant = new Map<string, typeof rows>();
  for (const row of rows) {
    if (row.tenantId === null) continue;
    byTenant.set(row.tenantId, [...(byTenant.get(row.tenantId) ?? []), row]);
  }
  const tenants = new Map([...byTenant].map(([tenantId, own]) => [tenantId, set(global, own)] as const));
  return { global, tenants };
}
