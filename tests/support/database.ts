import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import type { DbHandle } from '../../db/index.js';
import { openPglite } from '../../db/pglite.js';
import { openPostgres } from '../../db/postgres.js';

export interface TestDatabase {
  handle: DbHandle;
  /** The connection string of this file's own database (undefined on PGlite). */
  url?: string;
  drop(): Promise<void>;
}

/**
 * A database of this test file's own, migrated: on PostgreSQL a fresh `CREATE DATABASE` with a
 * random name (dropped afterwards); without a server URL, an in-memory PGlite.
 */
export async function createTestDatabase(
  serverUrl: string,
  options: { migrate?: boolean } = {},
): Promise<TestDatabase> {
  const migrate = options.migrate ?? true;
  if (serverUrl === '') {
    const handle = await openPglite();
    if (migrate) await handle.migrate();
    return { handle, drop: () => handle.close() };
  }

  const name = `sg_test_${randomBytes(6).toString('hex')}`;
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`create database ${name}`);
  } finally {
    await admin.end();
  }
  const url = withDatabase(serverUrl, name);
  const handle = await openPostgres(url, { maxConnections: 4 });
  if (migrate) await handle.migrate();
  return {
    handle,
    url,
    drop: async () => {
      await handle.close();
      const cleanup = postgres(serverUrl, { max: 1, onnotice: () => {} });
      try {
        await cleanup.unsafe(`drop database if exists ${name} with (force)`);
      } finally {
        await cleanup.end();
      }
    },
  };
}

export function withDatabase(serverUrl: string, database: string): string {
  const url = new URL(serverUrl);
  url.pathname = `/${database}`;
  return url.toString();
}
