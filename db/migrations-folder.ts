import { fileURLToPath } from 'node:url';

/** The committed drizzle-kit migrations (SQL + journal). */
export const MIGRATIONS_FOLDER = fileURLToPath(new URL('./migrations', import.meta.url));
