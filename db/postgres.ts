import { drizzle } from 'drizzle-orm/postgres-js';
import { migrate } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';
import { migrationsFolder } from './migrations-folder.js';
import * as schema from './schema/index.js';
import type { DbHandle } from './types.js';

// Any constant works; it only has to be the same in every spicegate process.
const MIGRATION_LOCK_KEY = 7_165_390_042;

const baseOptions = {
  // 5 s, as for Redis: a database that does not answer by then is reported, not waited on.
  connect_timeout: 5,
  // Migrations print NOTICEs ("already exists, skipping"); they are not worth a log line.
  onnotice: () => {},
} as const;

export async function openPostgres(
  url: string,
  options: { maxConnections?: number } = {},
): Promise<DbHandle> {
  const client = postgres(url, { ...baseOptions, max: options.maxConnections ?? 10 });
  const db = drizzle(client, { schema });
  let closed = false;
  return {
    db,
    engine: 'postgres',
    migrate: () => migrateWithLock(url),
    close: async () => {
      if (closed) return;
      closed = true;
      await client.end({ timeout: 5 });
    },
  };
}

/** Several instances may start at once: an advisory lock on one dedicated connection serialises them. */
async function migrateWithLock(url: string): Promise<void> {
  const client = postgres(url, { ...baseOptions, max: 1 });
  try {
    await client`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`;
    await migrate(drizzle(client), { migrationsFolder: migrationsFolder() });
    await client`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`;
  } finally {
    await client.end({ timeout: 5 });
  }
}
