import { defineConfig } from 'drizzle-kit';

// Migrations are generated (`npm run db:generate`) and committed; tests/unit/migrations.test.ts
// fails when they are stale against db/schema.
export default defineConfig({
  dialect: 'postgresql',
  schema: './db/schema/index.ts',
  out: './db/migrations',
});
