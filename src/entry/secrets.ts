import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** DATA_DIR holds the embedded database and generated secrets: only the owner may read it. */
export async function ensureDataDir(dataDir: string): Promise<void> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
}

export function adminTokenPath(dataDir: string): string {
  return join(dataDir, 'admin.token');
}

/**
 * Reads a secret kept in DATA_DIR, generating it (32 random bytes, base64url) on first use.
 * The file is created with mode 0600 and never overwritten, so a restart keeps the same secret,
 * and two processes racing on first start agree on one value.
 */
export async function ensureSecretFile(path: string): Promise<{ value: string; created: boolean }> {
  const existing = await readSecret(path);
  if (existing !== undefined) return { value: existing, created: false };
  const value = randomBytes(32).toString('base64url');
  try {
    await writeFile(path, `${value}\n`, { mode: 0o600, flag: 'wx' });
    await chmod(path, 0o600);
    return { value, created: true };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    const winner = await readSecret(path);
    if (winner === undefined) throw new Error(`${path} exists but is empty`);
    return { value: winner, created: false };
  }
}

export async function readSecret(path: string): Promise<string | undefined> {
  try {
    const value = (await readFile(path, 'utf8')).trim();
    return value === '' ? undefined : value;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}
