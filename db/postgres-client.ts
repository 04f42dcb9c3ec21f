import { drizzle } from 'drizzle-orm/postgres-js';
import postgres from 'postgres';
import * as schema from './schema/index.js';
import type { Db } from './types.js';

/** What every postgres.js client of spicegate is opened with. */
export const POSTGRES_OPTIONS = {
  // 5 s, as for Redis: a database that does not answer by then is reported, not waited on.
  connect_timeout: 5,
  // Migrations print NOTICEs ("already exists, skipping"); they are not worth a log line.
  onnotice: () => {},
} as const;

/**
 * A postgres.js client as drizzle's Db, without the migrator (db/postgres.ts adds it): the Workers
 * bundle opens its clients here. No connection is made before the first query.
 */
export function postgresClient(
  url: string,
  options: { maxConnections?: number } = {},
): { db: Db; close(): Promise<void> } {
  const client = postgres(url, { ...POSTGRES_OPTIONS, max: options.maxConnections ?? 10 });
  const db = drizzle(client, { schema });
  let closed = false;
  return {
    db,
    close: async () => {
      if (closed) return;
      closed = true;
      await client.end({ timeout: 5 });
    },
  };
}
