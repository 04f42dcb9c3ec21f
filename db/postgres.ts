import { drizzle } from 'drizzle-orm/postgres-js';
import { migrate } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';
import { migrationsFolder } from './migrations-folder.js';
import { POSTGRES_OPTIONS, postgresClient } from './postgres-client.js';
import type { DbHandle } from './types.js';

// Any constant works; it only has to be the same in every spicegate process.
const MIGRATION_LOCK_KEY = 7_165_390_042;

export async function openPostgres(
  url: string,
  options: { maxConnections?: number } = {},
): Promise<DbHandle> {
  const { db, close } = postgresClient(url, options);
  return { db, engine: 'postgres', migrate: () => migrateWithLock(url), close };
}

/** Several instances may start at once: an advisory lock on one dedicated connection serialises them. */
async function migrateWithLock(url: string): Promise<void> {
  const client = postgres(url, { ...POSTGRES_OPTIONS, max: 1 });
  try {
    await client`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`;
    await migrate(drizzle(client), { migrationsFolder: migrationsFolder() });
    await client`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`;
  } finally {
    await client.end({ timeout: 5 });
  }
}
