import type { Db } from '../../db/index.js';
import { featureFlags } from '../../db/schema/index.js';
import { asAdmin } from '../../db/scope.js';
import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import { AppError } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import type { CopyState } from '../settings/watched-copy.js';
import { WatchedCopy } from '../settings/watched-copy.js';
import type { Store } from '../store/typed-store.js';

/**
 * What each flag switches off: `inference` both inference routes; `payments` the IPN webhook and
 * new invoices; `keys` creating and rotating API keys (revoking and updating stay possible).
 */
export const FLAGS = ['payments', 'inference', 'keys'] as const;
export type Flag = (typeof FLAGS)[number];

/** The change counter `admin.flags.set` moves (lua/epoch.v1.lua). */
export const FLAGS_CHANGES = 'feature_flags';

type FlagSet = Readonly<Partial<Record<Flag, boolean>>>;

export interface FlagTables {
  global: FlagSet;
  tenants: ReadonlyMap<string, FlagSet>;
}

/**
 * The feature flags, from the `feature_flags` table, kept in memory by every instance
 * (src/settings/watched-copy.ts). A tenant's own flag beats the global one; no row, the feature is
 * on. `PAYMENTS=off` is a deployment's switch: no flag turns payments on over it.
 */
export class FeatureFlags extends WatchedCopy<FlagTables> {
  constructor(
    db: Db,
    parts: { store: Store; clock: Clock; log: Logger; state?: CopyState<FlagTables> | undefined },
    private readonly config: Pick<Config, 'payments'>,
  ) {
    super({ ...parts, counter: FLAGS_CHANGES, load: () => loadFlagTables(db) });
  }

  /** Whether `flag` is on for the tenant (or globally, without one). No I/O. */
  enabled(flag: Flag, tenantId?: string): boolean {
    if (flag === 'payments' && this.config.payments === 'off') return false;
    const tables = this.value;
    if (tables === undefined) return true;
    const own = tenantId === undefined ? undefined : tables.tenants.get(tenantId)?.[flag];
    return own ?? tables.global[flag] ?? true;
  }

  /** 503 `feature_disabled` naming the flag (`details.flag`), when it is off; else undefined. */
  refusal(flag: Flag, tenantId?: string): AppError | undefined {
    if (this.enabled(flag, tenantId)) return undefined;
    const by = flag === 'payments' && this.config.payments === 'off' ? 'PAYMENTS=off' : `the ${flag} flag`;
    return new AppError('feature_disabled', `The ${flag} feature is switched off (${by})`, { flag });
  }

  /** Throws `refusal(flag, tenantId)`, if any. */
  require(flag: Flag, tenantId?: string): void {
    const refused = this.refusal(flag, tenantId);
    if (refused !== undefined) throw refused;
  }
}

async function loadFlagTables(db: Db): Promise<FlagTables> {
  // Every tenant's overrides: platform work.
  const rows = await asAdmin(db, (tx) => tx.select().from(featureFlags));
  const global: Partial<Record<Flag, boolean>> = {};
  const tenants = new Map<string, Partial<Record<Flag, boolean>>>();
  for (const row of rows) {
    if (!isFlag(row.flag)) continue;
    if (row.tenantId === null) {
      global[row.flag] = row.enabled;
      continue;
    }
    const own = tenants.get(row.tenantId) ?? {};
    own[row.flag] = row.enabled;
    tenants.set(row.tenantId, own);
  }
  return { global, tenants };
}

export function isFlag(value: string): value is Flag {
  return (FLAGS as readonly string[]).includes(value);
}
