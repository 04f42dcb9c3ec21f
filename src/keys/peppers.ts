/**
 * API key peppers (API_KEY_PEPPERS): comma-separated `<version>:<secret>` entries, secrets of at
 * least 32 characters. The highest version hashes new keys; every version verifies, and a key
 * verified with an older one is rehashed with the newest. Rotate by adding a higher version,
 * waiting until keys have been used (or not caring: old ones keep verifying), then dropping the old.
 */
export interface Peppers {
  readonly current: { version: number; secret: string };
  get(version: number): string | undefined;
}

export function parsePeppers(text: string): Peppers | { error: string } {
  const entries = new Map<number, string>();
  for (const part of text.split(',')) {
    const match = /^\s*(\d{1,6}):(\S{32,})\s*$/.exec(part);
    if (!match?.[1] || !match[2]) return { error: 'entries must be <version>:<secret of 32+ characters>' };
    const version = Number(match[1]);
    if (version < 1 || entries.has(version)) return { error: 'versions must be positive and distinct' };
    entries.set(version, match[2]);
  }
  const version = Math.max(...entries.keys());
  return { current: { version, secret: entries.get(version) as string }, get: (v) => entries.get(v) };
}
