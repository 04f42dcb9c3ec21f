import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, describe, expect, it } from 'vitest';
import { createDb } from '../../db/index.js';
import { loadPgliteAssets } from '../../db/pglite-assets.js';
import { tenants } from '../../db/schema/index.js';

describe('embedded database opened as `spicegate serve` opens it', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
  });

  it('opens from the WASM and files read ahead, with a 16MB buffer cache, and stores rows', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sg-pglite-open-'));
    dirs.push(dir);
    const database = await createDb({ dataDir: dir, pglite: loadPgliteAssets() });
    try {
      await database.migrate();
      // The start-up cost of the buffer cache (docs/performance.md): PGlite must pass the setting on.
      const setting = (await database.db.execute(
        sql`select current_setting('shared_buffers') as value`,
      )) as unknown;
      expect((setting as { rows: { value: string }[] }).rows).toEqual([{ value: '16MB' }]);
      await database.db.insert(tenants).values({ id: 'ten_read_ahead', name: 'Read ahead', tier: 3 });
      const rows = await database.db.select({ name: tenants.name }).from(tenants);
      expect(rows).toEqual([{ name: 'Read ahead' }]);
    } finally {
      await database.close();
    }
  });
});
