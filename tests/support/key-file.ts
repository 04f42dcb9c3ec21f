import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jsonKeyDir } from '../../src/entry/key-file.js';
import type { KeyFile } from '../../src/signing/signer.js';

/** A private-key file of the test's own (rotation needs a signer whose keys persist). */
export function tempKeyFile(): KeyFile {
  return tempKeyDir().file;
}

/** The same, with a way to remove its directory once its signer is done (the harness's close). */
export function tempKeyDir(): { file: KeyFile; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'sg-keys-'));
  return {
    file: jsonKeyDir(join(dir, 'signing-keys')),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
