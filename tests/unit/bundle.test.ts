import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { bundle } from '../../bin/bundle.js';

/** bin/bundle.js: what `spicegate` runs instead of the TypeScript sources through loader hooks. */
describe('the spicegate bundle', () => {
  it('is one content-named bundle however many processes build it at once', async () => {
    const urls = await Promise.all([1, 2, 3].map(() => bundle('src/entry/cli.ts')));
    expect(new Set(urls).size).toBe(1);
    expect(urls[0]).toMatch(/\/[0-9a-f]{16}\/cli\.js$/);
  });

  it('imports packages by absolute URL and keeps each source file its own import.meta.url', async () => {
    const dir = dirname(fileURLToPath(await bundle('src/entry/cli.ts')));
    const files = (await readdir(dir)).filter((name) => name.endsWith('.js'));
    const code = (await Promise.all(files.map((name) => readFile(`${dir}/${name}`, 'utf8')))).join('\n');
    const specifiers = [...code.matchAll(/^import[^'"]*?from\s*["']([^"']+)["']/gm)].map((match) => match[1]);
    expect(specifiers.length).toBeGreaterThan(10);
    // Runs from any directory: no bare package names left to resolve from the bundle's location.
    expect(specifiers.filter((s) => !/^(node:|file:\/\/|\.\/)/.test(s ?? ''))).toEqual([]);
    // The migrations folder is still found next to db/migrations-folder.ts.
    expect(code).toContain('/db/migrations-folder.ts"');
    expect(code).not.toContain('import.meta.url');
  });

  it('reuses the last bundle while its sources are unchanged, and rebuilds when one changes', async () => {
    const root = fileURLToPath(new URL('../..', import.meta.url));
    const dir = await mkdtemp(join(tmpdir(), 'sg-bundle-'));
    const entry = relative(root, join(dir, 'entry.ts'));
    const record = join(root, '.build', `${entry.replaceAll('/', '_')}.inputs.json`);
    const bundles: string[] = [];
    try {
      await writeFile(join(dir, 'entry.ts'), "export { value } from './value.js';\n");
      await writeFile(join(dir, 'value.ts'), 'export const value: number = 1;\n');
      const first = await bundle(entry);
      bundles.push(first);
      expect((await import(first)).value).toBe(1);
      // Reused: the same bundle, and no build (a build rewrites the record: a new file).
      const built = await stat(record);
      expect(await bundle(entry)).toBe(first);
      expect((await stat(record)).ino).toBe(built.ino);

      // An imported file, not the entry, changes: a new bundle with the new value.
      await writeFile(join(dir, 'value.ts'), 'export const value: number = 2;\n');
      const second = await bundle(entry);
      bundles.push(second);
      expect(second).not.toBe(first);
      expect((await import(second)).value).toBe(2);
    } finally {
      await rm(dir, { recursive: true, force: true });
      await rm(record, { force: true });
      for (const url of bundles) await rm(dirname(fileURLToPath(url)), { recursive: true, force: true });
    }
  });
});
