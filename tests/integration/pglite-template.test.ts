import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { readMigrationFiles } from 'drizzle-orm/migrator';
import { drizzle } from 'drizzle-orm/pglite';
import { migrate } from 'drizzle-orm/pglite/migrator';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrationsFolder } from '../../db/migrations-folder.js';
import { openPglite } from '../../db/pglite.js';
import { buildTemplate, seedFromTemplate } from '../../db/pglite-template.js';

interface Journal {
  entries: { tag: string }[];
}

/** A copy of db/migrations holding only its first `count` migrations (a branch behind this one). */
async function migrationsPrefix(to: string, count: number): Promise<void> {
  await cp(migrationsFolder(), to, { recursive: true });
  const journalPath = join(to, 'meta', '_journal.json');
  const journal = JSON.parse(await readFile(journalPath, 'utf8')) as Journal;
  await writeFile(journalPath, JSON.stringify({ ...journal, entries: journal.entries.slice(0, count) }));
}

/** The migrations drizzle recorded in a data directory, oldest first. */
async function appliedHashes(dataDir: string, folder: string): Promise<string[]> {
  const client = await PGlite.create(dataDir);
  try {
    await migrate(drizzle(client), { migrationsFolder: folder });
    const { rows } = await client.query<{ hash: string }>(
      'select hash from drizzle.__drizzle_migrations order by created_at',
    );
    return rows.map((row) => row.hash);
  } finally {
    await client.close();
  }
}

/** db/pglite-template.ts: what a first start on PGlite copies instead of running initdb. */
describe('the PGlite template', () => {
  let work: string;
  let roots: string[];
  let behind: string;
  const all = readMigrationFiles({ migrationsFolder: migrationsFolder() });

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'sg-template-'));
    roots = [join(work, 'templates')];
    // One migration behind this branch, as a template built before the newest migration landed.
    behind = join(work, 'behind');
    await migrationsPrefix(behind, all.length - 1);
    await buildTemplate({ migrationsFolder: behind, roots });
  }, 180_000);
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('seeds a new data directory with the migrations it holds; the migrator applies the newer ones', async () => {
    const dataDir = join(work, 'first-start', 'pglite');
    expect(await seedFromTemplate(dataDir, { roots })).toBe(all.length - 1);
    expect(await appliedHashes(dataDir, migrationsFolder())).toEqual(all.map((migration) => migration.hash));
  }, 60_000);

  it("has openPglite's migrate() apply what a copy one migration behind lacks, then find nothing left", async () => {
    const dataDir = join(work, 'opened', 'pglite');
    expect(await seedFromTemplate(dataDir, { migrationsFolder: behind, roots })).toBe(all.length - 1);
    for (const _open of [1, 2]) {
      const handle = await openPglite(dataDir);
      try {
        await handle.migrate();
      } finally {
        await handle.close();
      }
    }
    expect(await appliedHashes(dataDir, behind)).toEqual(all.map((migration) => migration.hash));
  }, 60_000);

  it('seeds an existing empty directory (DATA_DIR made by hand)', async () => {
    const dataDir = join(work, 'empty');
    await mkdir(dataDir);
    expect(await seedFromTemplate(dataDir, { migrationsFolder: behind, roots })).toBe(all.length - 1);
    expect(await readdir(dataDir)).toContain('PG_VERSION');
  });

  it('copies nothing when an applied migration was edited since: no template fits', async () => {
    const edited = join(work, 'edited');
    await cp(migrationsFolder(), edited, { recursive: true });
    const first = (JSON.parse(await readFile(join(edited, 'meta', '_journal.json'), 'utf8')) as Journal)
      .entries[0]?.tag;
    await writeFile(join(edited, `${first}.sql`), '-- edited\n', { flag: 'a' });
    const dataDir = join(work, 'edited-start');
    expect(await seedFromTemplate(dataDir, { migrationsFolder: edited, roots })).toBeUndefined();
    await expect(readdir(dataDir)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('leaves a data directory that holds something alone', async () => {
    const dataDir = join(work, 'occupied');
    await mkdir(dataDir);
    await writeFile(join(dataDir, 'PG_VERSION'), '17\n');
    expect(await seedFromTemplate(dataDir, { roots })).toBeUndefined();
    expect(await readdir(dataDir)).toEqual(['PG_VERSION']);
  });

  it('ignores a template written by another PGlite version', async () => {
    const foreign = join(work, 'foreign');
    const dir = join(foreign, '0.0.1-f1', 'm1-0000000000000000');
    await mkdir(join(dir, 'data'), { recursive: true });
    await writeFile(join(dir, 'migrations.json'), JSON.stringify([]));
    expect(await seedFromTemplate(join(work, 'foreign-start'), { roots: [foreign] })).toBeUndefined();
  });

  it('building for the current migrations replaces the template they extend', async () => {
    const built = await buildTemplate({ roots });
    const [versionDir] = await readdir(roots[0] as string);
    expect(await readdir(join(roots[0] as string, versionDir as string))).toEqual([built.split('/').at(-1)]);
    const dataDir = join(work, 'current-start');
    expect(await seedFromTemplate(dataDir, { roots })).toBe(all.length);
    expect(await appliedHashes(dataDir, migrationsFolder())).toEqual(all.map((migration) => migration.hash));
  }, 180_000);
});
