import type { Context, MiddlewareHandler } from 'hono';
import { bearerToken } from '../auth/caller.js';
import { AppError } from '../errors.js';
import type { VerifiedKey } from '../keys/verifier.js';
import { requestBucket } from '../limits/auth-failures.js';
import { decisionHeaders, type PreAuthDecision, rateLimitedError } from '../limits/preauth.js';
import type { Services } from '../services.js';
import { type AppEnv, errorResponse } from './context.js';

export type KeyEnv = AppEnv & { Variables: AppEnv['Variables'] & { apiKey: VerifiedKey } };

/**
 * `Authorization: Bearer sg_…` on the caller routes. Every failure — no header, a malformed one,
 * an unknown prefix, a wrong secret, a revoked key — gets the same 401 body; all but a missing
 * header count against the client's failed-authentication budget (src/limits/auth-failures.ts),
 * and a client past it gets 429 unless it presents a key this instance has already verified. A
 * valid key of a frozen tenant gets 403 `tenant_frozen` (its holder already knows the key is real).
 */
export function requireApiKey(
  services: Services,
  render: (c: Context<KeyEnv>, error: AppError) => Response = errorResponse,
): MiddlewareHandler<KeyEnv> {
  return async (c, next) => {
    const authorization = c.req.header('authorization');
    const token = bearerToken(authorization);
    const refusal = services.authFailures.refusal(services, c);
    // A blocked client still gets in with a key this instance already holds (a valid key behind a
    // shared address is not locked out); anything else it presents costs no more work.
    const checked =
      token === undefined
        ? undefined
        : await services.keys.check(token, { cachedOnly: refusal !== undefined });
    if (checked?.ok !== true) {
      if (checked?.reason === 'tenant_frozen')
        return render(c, new AppError('tenant_frozen', 'This tenant is frozen; ask its administrator'));
      if (refusal !== undefined) return tooManyFailures(c, refusal, render);
      // A request without credentials is not a guess; any credential that does not verify is.
      if ((authorization ?? '').trim() !== '') {
        const decision = await services.authFailures.fail(requestBucket(services, c));
        if (!decision.allowed) return tooManyFailures(c, decision, render);
      }
      c.header('WWW-Authenticate', 'Bearer');
      return render(c, new AppError('unauthorized', 'A valid API key is required'));
    }
    c.set('apiKey', checked.key);
    await next();
  };
}

function tooManyFailures(
  c: Context<KeyEnv>,
  decision: PreAuthDecision,
  render: (c: Context<KeyEnv>, error: AppError) => Response,
): Response {
  for (const [name, value] of Object.entries(decisionHeaders(decision))) c.header(name, value);
  return render(c, rateLimitedError(decision, 'Too many failed authentications from this address'));
}
