import { PGlite } from '@electric-sql/pglite';
import { readMigrationFiles } from 'drizzle-orm/migrator';
import { drizzle } from 'drizzle-orm/pglite';
import { migrate } from 'drizzle-orm/pglite/migrator';
import { migrationsFolder } from './migrations-folder.js';
import { type PgliteAssets, tierUpLater } from './pglite-assets.js';
import { seedFromTemplate } from './pglite-template.js';
import * as schema from './schema/index.js';
import type { DbHandle } from './types.js';

/**
 * PostgreSQL's buffer cache inside PGlite's WASM memory. 16 MB rather than the 128 MB initdb
 * writes: PGlite zeroes and initialises it at every open (~0.12 s of a ~0.2 s start), the pages
 * behind it stay in the OS page cache, and the embedded database is a single process's.
 */
const SHARED_BUFFERS = '16MB';

/**
 * The embedded database: PostgreSQL compiled to WASM, persisted under `dataDir` (in memory when
 * omitted, as tests do). One process owns the files; other commands go through the running server.
 * A new `dataDir` starts as a copy of the migrated template when one fits (db/pglite-template.ts).
 * `assets`, when given, are PGlite's WASM and files already read (db/pglite-assets.ts).
 */
export async function openPglite(dataDir?: string, assets?: Promise<PgliteAssets>): Promise<DbHandle> {
  if (dataDir !== undefined) await seedFromTemplate(dataDir);
  tierUpLater(); // PGlite compiles its WASM itself when no assets are given
  const client = await PGlite.create({
    ...(dataDir === undefined ? {} : { dataDir }),
    ...(assets === undefined ? {} : await assets),
    startParams: [...PGlite.defaultStartParams, '-c', `shared_buffers=${SHARED_BUFFERS}`],
  });
  const db = drizzle(client, { schema });
  let closed = false;
  return {
    db,
    engine: 'pglite',
    migrate: async () => {
      if (await allApplied(client)) return;
      await migrate(db, { migrationsFolder: migrationsFolder() });
    },
    close: async () => {
      if (closed) return;
      closed = true;
      await client.close();
    },
  };
}

/**
 * Whether every committed migration is recorded (a restart): one query, where drizzle's migrator
 * runs its DDL and an empty transaction (~0.2 s on this machine; docs/performance.md "Boot").
 * A migration missing, or no migrations table yet: false, and the migrator runs.
 */
async function allApplied(client: PGlite): Promise<boolean> {
  const recorded = await client
    .query<{ hash: string }>('select hash from drizzle.__drizzle_migrations')
    .then((result) => new Set(result.rows.map((row) => row.hash)))
    .catch(() => undefined);
  if (recorded === undefined) return false;
  return readMigrationFiles({ migrationsFolder: migrationsFolder() }).every((m) => recorded.has(m.hash));
}
