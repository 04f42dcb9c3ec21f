import { describe, expect, it } from 'vitest';
import { generateKey, hashSecret, KEY_PATTERN, newSalt, parseKey } from '../../src/keys/format.js';
import { parsePeppers } from '../../src/keys/peppers.js';

describe('API key format', () => {
  it('generates sg_live_<12 base32>_<32 base62> and sg_test_… keys, all distinct', () => {
    const keys = Array.from({ length: 2_000 }, (_, i) => generateKey(i % 2 === 0));
    for (const { key, prefix, secret } of keys) {
      expect(key).toMatch(KEY_PATTERN);
      expect(key).toBe(`${prefix}_${secret}`);
      expect(secret).toMatch(/^[0-9A-Za-z]{32}$/);
    }
    expect(keys.filter((k) => k.key.startsWith('sg_test_'))).toHaveLength(1_000);
    expect(new Set(keys.map((k) => k.key)).size).toBe(keys.length);
    expect(new Set(keys.map((k) => k.prefix)).size).toBe(keys.length);
  });

  it('uses every base62 character about equally (no modulo bias toward the first ones)', () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < 4_000; i += 1) {
      for (const ch of generateKey(false).secret) counts.set(ch, (counts.get(ch) ?? 0) + 1);
    }
    expect(counts.size).toBe(62);
    const expected = (4_000 * 32) / 62;
    // With folding, the first 8 characters would get 5/4 of the others' share (~25 % more).
    for (const n of counts.values()) expect(Math.abs(n - expected) / expected).toBeLessThan(0.08);
  });

  it('parses only well-formed keys', () => {
    const { key, prefix, secret } = generateKey(true);
    expect(parseKey(key)).toEqual({ prefix, secret, sandbox: true });
    for (const bad of [
      `${key}x`,
      key.slice(1),
      key.replace('sg_test_', 'sg_prod_'),
      `${prefix}_${'!'.repeat(32)}`,
      '',
      'Bearer x',
    ]) {
      expect(parseKey(bad)).toBeUndefined();
    }
  });

  it('hashes with the pepper and the salt', () => {
    const salt = newSalt();
    const a = hashSecret('p'.repeat(32), salt, 'secret');
    expect(hashSecret('p'.repeat(32), salt, 'secret')).toEqual(a);
    expect(hashSecret('q'.repeat(32), salt, 'secret')).not.toEqual(a);
    expect(hashSecret('p'.repeat(32), newSalt(), 'secret')).not.toEqual(a);
  });
});

describe('peppers', () => {
  it('pick the highest version to hash and keep the others to verify', () => {
    const peppers = parsePeppers(`1:${'a'.repeat(32)},3:${'c'.repeat(32)},2:${'b'.repeat(32)}`);
    if ('error' in peppers) throw new Error(peppers.error);
    expect(peppers.current).toEqual({ version: 3, secret: 'c'.repeat(32) });
    expect(peppers.get(1)).toBe('a'.repeat(32));
    expect(peppers.get(4)).toBeUndefined();
  });

  it.each(['', 'nocolon', `0:${'a'.repeat(32)}`, '1:short', `1:${'a'.repeat(32)},1:${'b'.repeat(32)}`])(
    'refuse %j',
    (text) => {
      expect(parsePeppers(text)).toHaveProperty('error');
    },
  );
});
