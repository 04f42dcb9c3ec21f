import { defineConfig } from 'vitest/config';

/**
 * Two projects:
 * - unit: pure code, no services.
 * - integration: the real Redis and PostgreSQL named by REDIS_URL / DATABASE_URL; without them,
 *   a redis-server started on a free port and PGlite (tests/support/global-setup.ts). Each file
 *   gets its own database and Redis key prefix, so files run in any order and in parallel.
 */
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['tests/unit/**/*.test.ts'],
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: [
            'tests/integration/**/*.test.ts',
            'tests/e2e/**/*.test.ts',
            'tests/property/**/*.test.ts',
          ],
          globalSetup: ['tests/support/global-setup.ts'],
          testTimeout: 30_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
});
