import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import type { DbHandle } from '../../db/index.js';
import { openPglite } from '../../db/pglite.js';
import { openPostgres } from '../../db/postgres.js';
import { ADMIN_ROLE, TENANT_ROLE } from '../../db/scope.js';

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

/**
 * `url` as `login`, created if missing: a NOINHERIT login that owns nothing and may only become the
 * two roles of db/scope.ts (docs/deploy.md), so it can do nothing outside a scope.
 */
export async function loginUrl(url: string, login: string): Promise<string> {
  const owner = postgres(url, { max: 1, onnotice: () => {} });
  try {
    // Roles are cluster-wide: another file may create the same login at the same moment.
    await owner.unsafe(`do $$ begin
      create role ${login} login noinherit nosuperuser nocreatedb nocreaterole nobypassrls;
      exception when duplicate_object or unique_violation then null; end $$`);
    await owner.unsafe(`grant ${TENANT_ROLE}, ${ADMIN_ROLE} to ${login}`).catch((error: unknown) => {
      if (!/already|duplicate key/.test(String(error))) throw error;
    });
  } finally {
    await owner.end();
  }
  const withLogin = new URL(url);
  withLogin.username = login;
  return withLogin.toString();
}
