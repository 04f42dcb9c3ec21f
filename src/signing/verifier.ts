import { createRemoteJWKSet, decodeProtectedHeader, type JWTPayload, jwtVerify } from 'jose';

/** Key ids we sign with are JWK thumbprints; anything else (paths, quotes) is refused unread. */
export const KID_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;

export interface VerifierOptions {
  /** The gateway's JWKS, e.g. https://gateway.example/.well-known/jwks.json */
  jwksUrl: string;
  issuer: string;
  audience: string;
  /** Refetch the JWKS for an unknown kid at most once per this long (default 30 s). */
  cooldownMs?: number;
  /** Refetch the JWKS at least this often (default 300 s, the gateway's Cache-Control max-age). */
  cacheMaxAgeMs?: number;
  /** Clock tolerance for exp/nbf/iat (default 30 s). */
  clockToleranceSeconds?: number;
}

/**
 * What an upstream uses to verify the gateway's S2S tokens (exported from the package): remote
 * JWKS with a cooldown and one refetch on an unknown kid, ES256 only, iss and aud required,
 * typ JWT, 30 s clock tolerance. Embedded `jwk`/`jku`/`x5u` headers are never used: keys come
 * only from the configured JWKS.
 */
export function createVerifier(options: VerifierOptions): { verify(token: string): Promise<JWTPayload> } {
  const jwks = createRemoteJWKSet(new URL(options.jwksUrl), {
    cooldownDuration: options.cooldownMs ?? 30_000,
    cacheMaxAge: options.cacheMaxAgeMs ?? 300_000,
  });
  return {
    verify: async (token) => {
      const { kid } = decodeProtectedHeader(token);
      if (typeof kid !== 'string' || !KID_PATTERN.test(kid)) throw new Error('token has no acceptable kid');
      const { payload } = await jwtVerify(token, jwks, {
        algorithms: ['ES256'],
        issuer: options.issuer,
        audience: options.audience,
        typ: 'JWT',
        clockTolerance: options.clockToleranceSeconds ?? 30,
        requiredClaims: ['exp', 'iat', 'iss', 'aud'],
      });
      return payload;
    },
  };
}
