import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * Row-level security holds only if every query runs in a scope of db/scope.ts (asTenant, asAdmin,
 * asKeyLookup): the convention is that an unscoped database is called `db` (or `services.db`,
 * `this.db`) and only a scope's transaction, `tx`, is queried. This reads the source for a query
 * on an unscoped name; the integration tests back it up by running the app as a login that can
 * do nothing outside the two roles.
 */

const ROOTS = ['src', 'routers'];
// A ping that reads no table (/ready): no tenant's data, no scope needed.
const ALLOWED = [/^src\/http\/ready\.ts: .*services\.db\.execute\(sql`select 1`\)/];
const UNSCOPED =
  /(?:\bdb|services\.db|this\.db)\s*\.\s*(?:select|selectDistinct|insert|update|delete|execute|transaction|query|with)\b|(?:[^.\w]db|services\.db|this\.db)\s*$/;

async function sourceFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries
    .filter((entry) => entry.isFile() && entry.name.endsWith('.ts'))
    .map((entry) => join(entry.parentPath, entry.name))
    .filter((path) => !path.startsWith(join('src', 'store', 'memory')));
}

/** `file: line` for every line that queries an unscoped database. */
async function unscopedQueries(): Promise<string[]> {
  const found: string[] = [];
  for (const root of ROOTS) {
    for (const file of await sourceFiles(root)) {
      const lines = (await readFile(file, 'utf8')).split('\n');
      lines.forEach((line, index) => {
        const where = `${file}: ${line.trim()}`;
        if (UNSCOPED.test(line) && !ALLOWED.some((allowed) => allowed.test(where)))
          found.push(`${file}:${index + 1}: ${line.trim()}`);
      });
    }
  }
  return found;
}

describe('database access goes through db/scope.ts', () => {
  it('no query in src or routers runs on an unscoped database', async () => {
    expect(await unscopedQueries()).toEqual([]);
  });

  it('the check finds the shapes of an unscoped query', () => {
    for (const line of [
      'const rows = await services.db.select().from(spend);',
      '  const [row] = await services.db',
      'await this.db.insert(spend).values(row);',
      'const { db } = services; await db.execute(sql`select * from spend`);',
      'return db.transaction(async (tx) => {',
    ])
      expect(UNSCOPED.test(line), line).toBe(true);
    for (const line of [
      'const rows = await asTenant(services.db, tenantId, (tx) => tx.select().from(spend));',
      'await tx.insert(spend).values(row);',
      'const database = await createDb(options);',
    ])
      expect(UNSCOPED.test(line), line).toBe(false);
  });
});
