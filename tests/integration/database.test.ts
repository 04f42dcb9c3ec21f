import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createDb } from '../../db/index.js';
import { tenants } from '../../db/schema/index.js';
import { createTestDatabase, loginUrl, type TestDatabase } from '../support/database.js';
import { APP_LOGIN } from '../support/harness.js';

describe('embedded database (PGlite on disk)', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
  });

  it('migrates, keeps rows across a reopen, and migrates again without change', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sg-pglite-'));
    dirs.push(dir);
    const first = await createDb({ dataDir: dir });
    expect(first.engine).toBe('pglite');
    await first.migrate();
    await first.db.insert(tenants).values({ id: 'ten_persisted', name: 'Persisted', tier: 2 });
    await first.close();

    const second = await createDb({ dataDir: dir });
    await second.migrate();
    const rows = await second.db.select().from(tenants);
    expect(rows.map((row) => row.name)).toEqual(['Persisted']);
    await second.close();
  });
});

describe('PostgreSQL', () => {
  let database: TestDatabase | undefined;
  afterAll(async () => {
    await database?.drop();
  });

  it('applies every migration exactly once when several instances start at once', async () => {
    database = await createTestDatabase(inject('databaseUrl'), { migrate: false });
    const journal = JSON.parse(await readFile('db/migrations/meta/_journal.json', 'utf8')) as {
      entries: unknown[];
    };
    const url = database.url;
    // On PGlite (no DATABASE_URL) one process owns the database: one migrator, run twice.
    const handles =
      url === undefined
        ? [database.handle]
        : await Promise.all([1, 2, 3].map(() => createDb({ databaseUrl: url })));
    try {
      await Promise.all(handles.map((handle) => handle.migrate()));
      if (url === undefined) await database.handle.migrate();
      const rows = await database.handle.db.execute<{ n: number }>(
        sql`select count(*)::int as n from drizzle.__drizzle_migrations`,
      );
      const count = Array.isArray(rows)
        ? rows[0]?.n
        : (rows as unknown as { rows: { n: number }[] }).rows[0]?.n;
      expect(count).toBe(journal.entries.length);
    } finally {
      if (url !== undefined) await Promise.all(handles.map((handle) => handle.close()));
    }
  });

  it('enforces the tier range in the database itself', async () => {
    if (database === undefined) throw new Error('previous test did not create the database');
    await expect(
      database.handle.db.insert(tenants).values({ id: 'ten_bad', name: 'Bad', tier: 12 }),
    ).rejects.toThrow();
  });
});

describe('a gateway login that owns nothing (docs/deploy.md)', () => {
  let database: TestDatabase | undefined;
  afterAll(async () => {
    await database?.drop();
  });

  it('starts on a database the owner migrated, and names `spicegate migrate` when one is pending', async () => {
    database = await createTestDatabase(inject('databaseUrl'));
    if (database.url === undefined) throw new Error('this test needs the PostgreSQL server (DATABASE_URL)');
    const gateway = await createDb({ databaseUrl: await loginUrl(database.url, APP_LOGIN) });
    try {
      await gateway.migrate();
      // As if this version had one migration the owner has not applied yet.
      await database.handle.db.execute(
        sql`delete from drizzle.__drizzle_migrations where created_at = (select max(created_at) from drizzle.__drizzle_migrations)`,
      );
      await expect(gateway.migrate()).rejects.toThrow(
        /1 migration\(s\) pending and this database login may not apply them: run `spicegate migrate`/,
      );
    } finally {
      await gateway.close();
    }
  });
});
