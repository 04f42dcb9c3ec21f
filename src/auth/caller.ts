import { createHash, timingSafeEqual } from 'node:crypto';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  type JWTVerifyGetKey,
  jwtVerify,
} from 'jose';
import type { Services } from '../services.js';
import { CALLER_AUDIENCE } from '../signing/tokens.js';
import { KID_PATTERN } from '../signing/verifier.js';

/**
 * Who is calling the tRPC API (DESIGN.md §4): the bootstrap admin token, or a JWT issued by the
 * gateway (`spicegate token`) or by a configured external issuer. Roles: `admin`, `operator`
 * (read-only admin), `member` (one tenant).
 */
export type Caller =
  | { kind: 'anonymous' }
  | { kind: 'admin' | 'operator'; subject: string }
  | { kind: 'member'; subject: string; tenantId: string };

export const ANONYMOUS: Caller = { kind: 'anonymous' };

const TENANT_ID = /^[A-Za-z0-9_-]{1,64}$/;

export async function resolveCaller(
  services: Services,
  authorization: string | undefined,
  /** false for a client past its failed-authentication budget: only signed tokens, no guessing of the static one. */
  options: { bootstrapToken?: boolean } = {},
): Promise<Caller> {
  const token = bearerToken(authorization);
  if (token === undefined) return ANONYMOUS;
  if (
    options.bootstrapToken !== false &&
    services.adminToken !== undefined &&
    constantTimeEqual(token, services.adminToken)
  ) {
    return { kind: 'admin', subject: 'bootstrap' };
  }
  return (await verifyCallerJwt(services, token)) ?? ANONYMOUS;
}

/** A verified caller, or undefined for anything that is not a valid token of a known issuer. */
async function verifyCallerJwt(services: Services, token: string): Promise<Caller | undefined> {
  let issuer: unknown;
  try {
    const header = decodeProtectedHeader(token);
    if (header.alg !== 'ES256' || header.typ !== 'JWT') return undefined;
    if (typeof header.kid !== 'string' || !KID_PATTERN.test(header.kid)) return undefined;
    issuer = decodeJwt(token).iss;
  } catch {
    return undefined;
  }

  const { config } = services;
  let keys: JWTVerifyGetKey;
  let audience: string;
  if (issuer === config.jwtIssuer) {
    keys = createLocalJWKSet(services.signing.jwks().jwks);
    audience = CALLER_AUDIENCE;
  } else if (
    config.externalAuth !== undefined &&
    services.externalIssuerKeys !== undefined &&
    issuer === config.externalAuth.issuer
  ) {
    keys = services.externalIssuerKeys;
    audience = config.externalAuth.audience;
  } else {
    return undefined;
  }

  try {
    const { payload } = await jwtVerify(token, keys, {
      algorithms: ['ES256'],
      issuer: issuer as string,
      audience,
      typ: 'JWT',
      clockTolerance: config.jwtClockSkewSeconds,
      currentDate: new Date(services.clock.now()),
      requiredClaims: ['exp', 'sub'],
    });
    const subject = String(payload.sub);
    switch (payload.role) {
      case 'admin':
      case 'operator':
        return { kind: payload.role, subject };
      case 'member':
        return typeof payload.tenant_id === 'string' && TENANT_ID.test(payload.tenant_id)
          ? { kind: 'member', subject, tenantId: payload.tenant_id }
          : undefined;
      default:
        return undefined;
    }
  } catch {
    return undefined;
  }
}

/**
 * The external issuer's JWKS, fetched on first use. Built once per Services (or per Workers
 * isolate): its cache and cooldown must outlive a request.
 */
export function remoteIssuerKeys(externalAuth: { jwksUrl: string }): JWTVerifyGetKey {
  // 30 s cooldown: an unknown kid triggers at most one fetch per 30 s, so forged kids cannot
  // turn the gateway into a flood against the issuer.
  return createRemoteJWKSet(new URL(externalAuth.jwksUrl), { cooldownDuration: 30_000 });
}

/** The credentials of `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC 7235 §2.1). */
export function bearerToken(authorization: string | undefined): string | undefined {
  const match = /^bearer +([\x21-\x7e]{1,8192})$/i.exec(authorization ?? '');
  return match?.[1];
}

/** Compares digests, so neither the content nor the length of the secret leaks through timing. */
export function constantTimeEqual(a: string, b: string): boolean {
  const digest = (value: string) => createHash('sha256').update(value).digest();
  return timingSafeEqual(digest(a), digest(b));
}
