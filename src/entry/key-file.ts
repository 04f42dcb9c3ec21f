import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { JWK } from 'jose';
import type { KeyFile } from '../signing/signer.js';

/**
 * Private signing keys as one JSON file per key in a directory (mode 0700; files 0600). Adding a
 * key writes only its own file, atomically, so processes sharing the directory never overwrite
 * each other's keys.
 */
export function jsonKeyDir(dir: string): KeyFile {
  return {
    read: async () => {
      let names: string[];
      try {
        names = (await readdir(dir)).filter((name) => name.endsWith('.json'));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw error;
      }
      return Promise.all(
        names.map(async (name) => JSON.parse(await readFile(join(dir, name), 'utf8')) as JWK),
      );
    },
    add: async (kid, jwk) => {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const path = join(dir, `${kid}.json`);
      const temporary = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
      await writeFile(temporary, `${JSON.stringify(jwk)}\n`, { mode: 0o600 });
      await chmod(temporary, 0o600);
      await rename(temporary, path);
    },
  };
}
