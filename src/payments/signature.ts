import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * NOWPayments' IPN signature (DESIGN.md §4): hex HMAC-SHA512 over the JSON of the body with its
 * object keys sorted recursively (arrays keep their order), as `JSON.stringify` writes it. The
 * body is parsed from the raw bytes received; numbers keep the text JavaScript gives them, as the
 * provider's own reference code (Node) does.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value === null || typeof value !== 'object') return value;
  const record = value as Record<string, unknown>;
  return Object.fromEntries(
    Object.keys(record)
      .sort()
      .map((key) => [key, sortKeys(record[key])]),
  );
}

export function ipnSignature(secret: string, body: unknown): string {
  return createHmac('sha512', secret).update(canonicalJson(body)).digest('hex');
}

const SIGNATURE = /^[0-9a-f]{128}$/i;

/**
 * Whether `signature` (the `x-nowpayments-sig` header) signs `body` under one of `secrets` (the
 * current one, and the old one during a rotation). Each comparison is constant-time over 64 bytes,
 * after a length and alphabet check; every secret is tried, so the time says nothing about which.
 */
export function verifyIpnSignature(
  secrets: readonly string[],
  body: unknown,
  signature: string | undefined,
): boolean {
  if (signature === undefined || !SIGNATURE.test(signature)) return false;
  const given = Buffer.from(signature.toLowerCase(), 'hex');
  const payload = canonicalJson(body);
  let valid = false;
  for (const secret of secrets) {
    const expected = createHmac('sha512', secret).update(payload).digest();
    if (expected.length === given.length && timingSafeEqual(expected, given)) valid = true;
  }
  return valid;
}
