import { randomUUID } from 'node:crypto';
import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import { CONTRACT_VERSION } from '../version.js';
import type { SigningKeys } from './keys.js';

/** The audience of tokens for tRPC callers; S2S tokens carry the upstream's audience instead. */
export const CALLER_AUDIENCE = 'spicegate-admin';

export type Role = 'admin' | 'operator' | 'member';

interface TokenServices {
  signing: SigningKeys;
  config: Config;
  clock: Clock;
}

export interface S2sClaims {
  /** Who the request is for (the caller's user, or the key id). */
  subject: string;
  tenantId: string;
  tier: number;
  pool: string;
  reservationId: string;
  keyId: string;
}

/**
 * The service-to-service token an upstream verifies against our JWKS (DESIGN.md §4, contract
 * v1.0.0): ES256, short-lived (exp = iat + 60 s), one jti per request.
 */
export async function signS2sToken(services: TokenServices, claims: S2sClaims): Promise<string> {
  const iat = Math.floor(services.clock.now() / 1000);
  return services.signing.sign({
    iss: services.config.jwtIssuer,
    aud: services.config.s2sAudience,
    iat,
    exp: iat + services.config.s2sTokenTtlSeconds,
    jti: randomUUID(),
    sub: claims.subject,
    tenant_id: claims.tenantId,
    tier: claims.tier,
    pool: claims.pool,
    budget_reservation_id: claims.reservationId,
    key_id: claims.keyId,
    contract_version: CONTRACT_VERSION,
  });
}

/** A bearer token for the tRPC API, signed with the gateway's own key (`spicegate token`). */
export async function issueCallerToken(
  services: TokenServices,
  input: { role: Role; subject: string; tenantId?: string; ttlSeconds: number },
): Promise<{ token: string; expiresAt: string }> {
  const iat = Math.floor(services.clock.now() / 1000);
  const exp = iat + input.ttlSeconds;
  const token = await services.signing.sign({
    iss: services.config.jwtIssuer,
    aud: CALLER_AUDIENCE,
    iat,
    exp,
    jti: randomUUID(),
    sub: input.subject,
    role: input.role,
    ...(input.tenantId === undefined ? {} : { tenant_id: input.tenantId }),
  });
  return { token, expiresAt: new Date(exp * 1000).toISOString() };
}
