import { createHmac, randomBytes } from 'node:crypto';

/**
 * API key format (DESIGN.md §4): `sg_live_<12 base32 A-Z2-7>_<32 base62>`, sandbox `sg_test_…`.
 * The part before the last `_` is the lookup prefix (unique, stored); the 32 base62 characters
 * are the secret (32 × log2(62) ≈ 190.5 bits), never stored.
 */
export const KEY_PATTERN = /^(sg_(live|test)_[A-Z2-7]{12})_([0-9A-Za-z]{32})$/;

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** Unbiased: bytes ≥ the largest multiple of the alphabet size are rejected, not folded. */
function randomString(alphabet: string, length: number): string {
  const limit = 256 - (256 % alphabet.length);
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < limit) out += alphabet[byte % alphabet.length];
      if (out.length === length) break;
    }
  }
  return out;
}

export interface NewKey {
  key: string;
  prefix: string;
  secret: string;
}

export function generateKey(sandbox: boolean): NewKey {
  const prefix = `sg_${sandbox ? 'test' : 'live'}_${randomString(BASE32, 12)}`;
  const secret = randomString(BASE62, 32);
  return { key: `${prefix}_${secret}`, prefix, secret };
}

export function parseKey(key: string): { prefix: string; secret: string; sandbox: boolean } | undefined {
  const match = KEY_PATTERN.exec(key);
  if (!match?.[1] || !match[3]) return undefined;
  return { prefix: match[1], secret: match[3], sandbox: match[2] === 'test' };
}

/** HMAC-SHA256(pepper, salt ‖ secret), base64. */
export function hashSecret(pepper: string, salt: Buffer, secret: string): Buffer {
  return createHmac('sha256', pepper).update(salt).update(secret).digest();
}

export function newSalt(): Buffer {
  return randomBytes(16);
}
