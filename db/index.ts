import type { PgliteAssets } from './pglite-assets.js';
import type { DbHandle } from './types.js';

export * as schema from './schema/index.js';
export type { Db, DbEngine, DbHandle } from './types.js';

/**
 * Opens the database the configuration names: postgres.js for a `databaseUrl`, otherwise PGlite
 * (persisted in `dataDir`, or in memory without one). Drivers load on demand, so a Workers bundle
 * that imports db/postgres.ts directly never pulls PGlite in.
 */
export async function createDb(options: {
  databaseUrl?: string;
  dataDir?: string;
  /** PGlite's WASM and files, when already being read (db/pglite-assets.ts). */
  pglite?: Promise<PgliteAssets>;
}): Promise<DbHandle> {
  if (options.databaseUrl !== undefined) {
    const { openPostgres } = await import('./postgres.js');
    return openPostgres(options.databaseUrl);
  }
  const { openPglite } = await import('./pglite.js');
  return openPglite(options.dataDir, options.pglite);
}
