import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import type * as schema from './schema/index.js';

/** One database type for both drivers (PGlite embedded, postgres.js in production). */
export type Db = PgDatabase<PgQueryResultHKT, typeof schema>;

export type DbEngine = 'pglite' | 'postgres';

export interface DbHandle {
  readonly db: Db;
  readonly engine: DbEngine;
  /** Applies the committed migrations in db/migrations; safe to run from several processes at once. */
  migrate(): Promise<void>;
  close(): Promise<void>;
}
