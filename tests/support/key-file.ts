import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jsonKeyDir } from '../../src/entry/key-file.js';
import type { KeyFile } from '../../src/signing/signer.js';

/** A private-key file of the test's own (rotation needs a signer whose keys persist). */
export function tempKeyFile(): KeyFile {
  return jsonKeyDir(join(mkdtempSync(join(tmpdir(), 'sg-keys-')), 'signing-keys'));
}
