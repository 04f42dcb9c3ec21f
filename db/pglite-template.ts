import { createHash, randomBytes } from 'node:crypto';
import {
  constants,
  copyFile,
  mkdir,
  readdir,
  readFile,
  rename,
  rm,
  rmdir,
  stat,
  writeFile,
} from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { readMigrationFiles } from 'drizzle-orm/migrator';
import { drizzle } from 'drizzle-orm/pglite';
import { migrate } from 'drizzle-orm/pglite/migrator';
import { migrationsFolder } from './migrations-folder.js';

/**
 * A migrated PGlite data directory that a first start copies into DATA_DIR instead of running
 * initdb and every migration (seconds of WASM work; docs/performance.md "Boot"). `npm install`
 * builds it (scripts/prepare-start.js). Templates are kept per PGlite version, each with the
 * migrations it holds (journal time and hash, as drizzle records them); a first start takes the
 * one whose migrations are the longest prefix of the current ones, and the migrator then applies
 * whatever is newer. None that fits (another PGlite, an edited migration): initdb, as before.
 */

/** Bump when what a template holds, or how it is built, changes. */
const FORMAT = 1;

interface Template {
  dir: string;
  migrations: string[];
}

/** Where templates are and which migrations count; tests point both elsewhere. */
export interface TemplateOptions {
  migrationsFolder?: string;
  /** Searched in order; a template is built in the first writable one. */
  roots?: string[];
}

/** `.build/pglite/` in the project, or under the OS temp directory when the project is read-only. */
function templateRoots(): string[] {
  const project = fileURLToPath(new URL('..', import.meta.url));
  return [join(project, '.build', 'pglite'), join(tmpdir(), 'spicegate-build', 'pglite')];
}

/** The migrations as drizzle's migrator records them: `<journal time>:<sha256 of the SQL>`. */
function currentMigrations(folder: string): string[] {
  return readMigrationFiles({ migrationsFolder: folder }).map(
    (migration) => `${migration.folderMillis}:${migration.hash}`,
  );
}

/** Templates are only valid for the PGlite build (its PostgreSQL and catalog) that wrote them. */
async function pgliteVersion(): Promise<string> {
  // From this source file (bin/bundle.js keeps import.meta.url), wherever the bundle runs.
  const entry = createRequire(import.meta.url).resolve('@electric-sql/pglite');
  let dir = dirname(entry);
  for (;;) {
    const manifest = await readFile(join(dir, 'package.json'), 'utf8').catch(() => undefined);
    if (manifest !== undefined) {
      const { name, version } = JSON.parse(manifest) as { name?: string; version?: string };
      if (name === '@electric-sql/pglite' && version !== undefined) return version;
    }
    if (dirname(dir) === dir) throw new Error('cannot find the version of @electric-sql/pglite');
    dir = dirname(dir);
  }
}

async function versionDirs(roots: string[]): Promise<string[]> {
  const name = `${await pgliteVersion()}-f${FORMAT}`;
  return roots.map((root) => join(root, name));
}

async function listTemplates(versionDir: string): Promise<Template[]> {
  const names = await readdir(versionDir).catch(() => [] as string[]);
  const found: Template[] = [];
  for (const name of names) {
    if (name.startsWith('staging-')) continue;
    const dir = join(versionDir, name);
    const text = await readFile(join(dir, 'migrations.json'), 'utf8').catch(() => undefined);
    if (text !== undefined) found.push({ dir, migrations: JSON.parse(text) as string[] });
  }
  return found;
}

function isPrefix(prefix: readonly string[], of: readonly string[]): boolean {
  return prefix.length <= of.length && prefix.every((entry, index) => entry === of[index]);
}

/** The template holding the most of `migrations` (as a prefix), if any. */
async function bestTemplate(migrations: string[], roots: string[]): Promise<Template | undefined> {
  let best: Template | undefined;
  for (const versionDir of await versionDirs(roots)) {
    for (const template of await listTemplates(versionDir)) {
      if (!isPrefix(template.migrations, migrations)) continue;
      if (best === undefined || template.migrations.length > best.migrations.length) best = template;
    }
  }
  return best;
}

/**
 * Copies the best template into `dataDir` when it holds no database yet (missing or empty).
 * Returns how many migrations the copy already holds, or undefined when nothing was copied (a
 * database is there, no template fits, or copying failed: PGlite then runs initdb as before).
 * The copy is staged beside `dataDir` and renamed into place, so a crash never leaves half of one.
 */
export async function seedFromTemplate(
  dataDir: string,
  options: TemplateOptions = {},
): Promise<number | undefined> {
  const startedAt = performance.now();
  const existing = await readdir(dataDir).catch(() => undefined);
  if (existing !== undefined && existing.length > 0) return undefined;
  let staging: string | undefined;
  try {
    const folder = options.migrationsFolder ?? migrationsFolder();
    const template = await bestTemplate(currentMigrations(folder), options.roots ?? templateRoots());
    if (template === undefined) return undefined;
    await mkdir(dirname(dataDir), { recursive: true });
    staging = `${dataDir}.seed-${randomBytes(4).toString('hex')}`;
    await copyTree(join(template.dir, 'data'), staging);
    if (existing !== undefined) await rmdir(dataDir);
    await rename(staging, dataDir);
    // For the start-up breakdown (src/entry/node.ts logs these measures; npm run bench:boot).
    performance.measure('spicegate:pglite-seed', { start: startedAt });
    return template.migrations.length;
  } catch {
    if (staging !== undefined) await rm(staging, { recursive: true, force: true }).catch(() => undefined);
    return undefined;
  }
}

/** Files in parallel (libuv's pool), as a clone where the file system can (copy-on-write). */
async function copyTree(from: string, to: string): Promise<void> {
  await mkdir(to, { mode: (await stat(from)).mode & 0o777 });
  const entries = await readdir(from, { withFileTypes: true });
  await Promise.all(
    entries.map((entry) =>
      entry.isDirectory()
        ? copyTree(join(from, entry.name), join(to, entry.name))
        : copyFile(join(from, entry.name), join(to, entry.name), constants.COPYFILE_FICLONE),
    ),
  );
}

/**
 * Builds the template for the current migrations unless one exists: initdb and every migration
 * in a staging directory, a clean shutdown (a checkpoint: the copy needs no recovery), then one
 * rename. Templates it supersedes (their migrations a prefix of these) are removed; others stay
 * (another branch's). Returns the template's directory.
 */
export async function buildTemplate(options: TemplateOptions = {}): Promise<string> {
  const folder = options.migrationsFolder ?? migrationsFolder();
  const migrations = currentMigrations(folder);
  const name = `m${migrations.length}-${createHash('sha256').update(migrations.join('\n')).digest('hex').slice(0, 16)}`;
  let lastError: unknown;
  for (const versionDir of await versionDirs(options.roots ?? templateRoots())) {
    const dir = join(versionDir, name);
    try {
      if (await stat(join(dir, 'migrations.json')).catch(() => undefined)) return dir;
      await mkdir(versionDir, { recursive: true });
      const staging = join(versionDir, `staging-${randomBytes(4).toString('hex')}`);
      await mkdir(staging);
      try {
        const client = await PGlite.create(join(staging, 'data'));
        try {
          await migrate(drizzle(client), { migrationsFolder: folder });
        } finally {
          await client.close();
        }
        await writeFile(join(staging, 'migrations.json'), `${JSON.stringify(migrations)}\n`);
        // Another process may have built the same template meanwhile: theirs is identical.
        await rename(staging, dir).catch(() => undefined);
      } finally {
        await rm(staging, { recursive: true, force: true });
      }
      await removeSuperseded(versionDir, dir, migrations);
      return dir;
    } catch (error) {
      lastError = error;
    }
  }
  throw lastError;
}

/** Templates of other PGlite versions (or formats), and those `migrations` extend, are dead. */
async function removeSuperseded(versionDir: string, kept: string, migrations: string[]): Promise<void> {
  const root = dirname(versionDir);
  for (const name of await readdir(root).catch(() => [] as string[])) {
    if (join(root, name) !== versionDir) await rm(join(root, name), { recursive: true, force: true });
  }
  for (const older of await listTemplates(versionDir)) {
    if (older.dir !== kept && isPrefix(older.migrations, migrations))
      await rm(older.dir, { recursive: true, force: true });
  }
}
