import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cp, mkdir, readdir, rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);

describe('committed migrations', () => {
  it('are up to date with db/schema (drizzle-kit generate finds nothing to add)', async () => {
    // drizzle-kit only accepts an --out relative to the working directory.
    const out = `node_modules/.cache/sg-migrations-${randomBytes(4).toString('hex')}`;
    await mkdir(out, { recursive: true });
    try {
      await cp('db/migrations', out, { recursive: true });
      const before = (await readdir(out)).sort();
      expect(before).toContain('meta');
      const { stdout, stderr } = await run(
        'node_modules/.bin/drizzle-kit',
        ['generate', '--dialect', 'postgresql', '--schema', './db/schema/index.ts', '--out', out],
        { timeout: 60_000 },
      );
      expect(stderr).not.toMatch(/error/i);
      expect(stdout).toContain('No schema changes');
      // A new .sql file means db/schema changed without `npm run db:generate`.
      expect((await readdir(out)).sort()).toEqual(before);
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });
});
