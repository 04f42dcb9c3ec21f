import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { drizzle } from 'drizzle-orm/postgres-js';
import { migrate } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';
import { migrationsFolder } from './migrations-folder.js';
import { POSTGRES_OPTIONS, postgresClient } from './postgres-client.js';
import { ADMIN_ROLE } from './scope.js';
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

/**
 * Several instances may start at once: an advisory lock on one dedicated connection serialises
 * them. A login that may not migrate (docs/deploy.md: gateways that own nothing) passes when the
 * owner has applied every migration, and otherwise says which command to run.
 */
async function migrateWithLock(url: string): Promise<void> {
  const client = postgres(url, { ...POSTGRES_OPTIONS, max: 1 });
  try {
    await client`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`;
    try {
      await migrate(drizzle(client), { migrationsFolder: migrationsFolder() });
    } catch (error) {
      if (!isInsufficientPrivilege(error)) throw error;
      const pending = await pendingMigrations(client);
      if (pending > 0)
        throw new Error(
          `${pending} migration(s) pending and this database login may not apply them: run \`spicegate migrate\` with the owner's DATABASE_URL first`,
        );
    }
    await client`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`;
  } finally {
    await client.end({ timeout: 5 });
  }
}

function isInsufficientPrivilege(error: unknown): boolean {
  const { code, cause } = error as { code?: string; cause?: { code?: string } };
  return code === '42501' || cause?.code === '42501';
}

/** Migrations of the journal newer than the last one applied (drizzle's own rule), read as the admin role. */
async function pendingMigrations(client: postgres.Sql): Promise<number> {
  const journal = JSON.parse(await readFile(join(migrationsFolder(), 'meta', '_journal.json'), 'utf8')) as {
    entries: { when: number }[];
  };
  const [last] = await client.begin(async (sql) => {
    await sql`select set_config('role', ${ADMIN_ROLE}, true)`;
    return sql<{ at: string | null }[]>`select max(created_at)::text as at from drizzle.__drizzle_migrations`;
  });
  const appliedUpTo = Number(last?.at ?? 0);
  return journal.entries.filter((entry) => entry.when > appliedUpTo).length;
}
