import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { GENERATED_PATH, renderRegistry, scriptBody } from '../../scripts/lua-registry.js';
import { SCRIPTS } from '../../src/store/scripts.generated.js';

const sha1 = (source: string) => createHash('sha1').update(source, 'utf8').digest('hex');

async function released(): Promise<Record<string, string>> {
  const record = JSON.parse(await readFile('lua/released.json', 'utf8')) as { sha1: Record<string, string> };
  return record.sha1;
}

const fileOf = (name: string, version: number) => `${name}.v${version}.lua`;

describe('the Lua script registry', () => {
  it('is what `npm run lua:registry` renders from lua/ today', async () => {
    expect(await readFile(GENERATED_PATH, 'utf8')).toBe(await renderRegistry());
  });

  it('calls only released scripts, each from the file recorded when it shipped, its comments left out', async () => {
    const record = await released();
    for (const script of Object.values(SCRIPTS)) {
      const file = fileOf(script.name, script.version);
      const text = await readFile(`lua/${file}`, 'utf8');
      expect(record[file], `${file} is not in lua/released.json`).toBeDefined();
      expect(sha1(text), `${file} differs from its released bytes`).toBe(record[file]);
      expect(script.source).toBe(scriptBody(text));
      expect(script.sha1, `${file}: the id Redis gives what is sent`).toBe(sha1(script.source));
      expect(script.source, file).not.toMatch(/^\s*--/m);
    }
  });

  it('never changes a released file in place, and deletes one only once a newer version exists', async () => {
    const files = new Set(await readdir('lua'));
    for (const [file, recorded] of Object.entries(await released())) {
      if (files.has(file)) {
        expect(sha1(await readFile(`lua/${file}`, 'utf8')), `lua/${file} changed after release`).toBe(
          recorded,
        );
        continue;
      }
      const [, name, version] = /^([a-z_]+)\.v(\d+)\.lua$/.exec(file) ?? [];
      const successor = Object.values(SCRIPTS).find((script) => script.name === name);
      expect(successor?.version, `lua/${file} was deleted without a newer version`).toBeGreaterThan(
        Number(version),
      );
    }
  });

  it('documents KEYS, ARGV and returns in every header', async () => {
    for (const script of Object.values(SCRIPTS)) {
      const header = (await readFile(`lua/${fileOf(script.name, script.version)}`, 'utf8'))
        .split('\n')
        .filter((line) => line.startsWith('--'))
        .join('\n');
      expect(header, script.name).toMatch(new RegExp(`^-- ${script.name} v${script.version}:`));
      expect(header, script.name).toContain('KEYS[1]');
      expect(header, script.name).toMatch(/returns/);
    }
  });
});
