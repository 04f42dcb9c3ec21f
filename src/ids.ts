import { randomUUID } from 'node:crypto';

/**
 * The one id generator: `<prefix>_<32 hex>` (122 random bits). The prefix says what an id names
 * (`ten_` tenant, `key_` API key, `res_` reservation), so a misplaced id is obvious in a log line.
 */
export function newId(prefix: string): string {
  return `${prefix}_${randomUUID().replaceAll('-', '')}`;
}
