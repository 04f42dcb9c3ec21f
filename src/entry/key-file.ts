import { chmod, readFile, rename, writeFile } from 'node:fs/promises';
import type { JWK } from 'jose';
import type { KeyFile } from '../signing/signer.js';

/** Private signing keys as a JSON file, written atomically with mode 0600. */
export function jsonKeyFile(path: string): KeyFile {
  return {
    read: async () => {
      try {
        return JSON.parse(await readFile(path, 'utf8')) as JWK[];
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw error;
      }
    },
    write: async (keys) => {
      const temporary = `${path}.${process.pid}.tmp`;
      await writeFile(temporary, `${JSON.stringify(keys)}\n`, { mode: 0o600 });
      await chmod(temporary, 0o600);
      await rename(temporary, path);
    },
  };
}
