import { readdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
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
});
