import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { GENERATED_PATH, renderRegistry } from '../../scripts/lua-registry.js';
import { SCRIPTS } from '../../src/store/scripts.generated.js';

describe('the Lua script registry', () => {
  it('is what `npm run lua:registry` renders from lua/ today', async () => {
    expect(await readFile(GENERATED_PATH, 'utf8')).toBe(await renderRegistry());
  });

  it('never changes a released script in place (a new behaviour is a new version file)', async () => {
    const released = JSON.parse(await readFile('lua/released.json', 'utf8')) as {
      sha1: Record<string, string>;
    };
    for (const [file, sha1] of Object.entries(released.sha1)) {
      const source = await readFile(`lua/${file}`, 'utf8');
      expect(
        createHash('sha1').update(source, 'utf8').digest('hex'),
        `lua/${file} changed after release`,
      ).toBe(sha1);
    }
  });

  it('pins the SHA-1 Redis computes for each script', () => {
    for (const script of Object.values(SCRIPTS)) {
      expect(createHash('sha1').update(script.source, 'utf8').digest('hex')).toBe(script.sha1);
    }
  });

  it('documents KEYS, ARGV and returns in every header', () => {
    for (const script of Object.values(SCRIPTS)) {
      const header = script.source
        .split('\n')
        .filter((line) => line.startsWith('--'))
        .join('\n');
      expect(header, script.name).toMatch(new RegExp(`^-- ${script.name} v${script.version}:`));
      expect(header, script.name).toContain('KEYS[1]');
      expect(header, script.name).toMatch(/returns/);
    }
  });
});
