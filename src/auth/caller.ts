import { createHash, timingSafeEqual } from 'node:crypto';
import type { Services } from '../services.js';

/**
 * Who is calling the tRPC API. Today: the bootstrap admin token (DESIGN.md §6) or nobody.
 * JWT callers (admin, operator, member of one tenant) arrive with the signing feature.
 */
export type Caller = { kind: 'anonymous' } | { kind: 'admin'; subject: string };

export const ANONYMOUS: Caller = { kind: 'anonymous' };

export function resolveCaller(services: Services, authorization: string | undefined): Caller {
  const token = bearerToken(authorization);
  if (token === undefined || services.adminToken === undefined) return ANONYMOUS;
  if (constantTimeEqual(token, services.adminToken)) return { kind: 'admin', subject: 'bootstrap' };
  return ANONYMOUS;
}

export function bearerToken(authorization: string | undefined): string | undefined {
  const match = /^Bearer ([\x21-\x7e]{1,4096})$/.exec(authorization ?? '');
  return match?.[1];
}

/** Compares digests, so neither the content nor the length of the secret leaks through timing. */
export function constantTimeEqual(a: string, b: string): boolean {
  const digest = (value: string) => createHash('sha256').update(value).digest();
  return timingSafeEqual(digest(a), digest(b));
}
