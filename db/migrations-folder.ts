import { fileURLToPath } from 'node:url';

/**
 * The committed drizzle-kit migrations (SQL + journal). A function, not a constant: bundles for
 * Workers have no file URL to resolve, and they never migrate.
 */
export function migrationsFolder(): string {
  return fileURLToPath(new URL('./migrations', import.meta.url));
}
