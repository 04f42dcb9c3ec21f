import type { Context, MiddlewareHandler } from 'hono';
import { bearerToken } from '../auth/caller.js';
import { AppError } from '../errors.js';
import type { VerifiedKey } from '../keys/verifier.js';
import type { Services } from '../services.js';
import { type AppEnv, errorResponse } from './context.js';

export type KeyEnv = AppEnv & { Variables: AppEnv['Variables'] & { apiKey: VerifiedKey } };

/**
 * `Authorization: Bearer sg_…` on the caller routes. Every failure — no header, a malformed one,
 * an unknown prefix, a wrong secret, a revoked key — gets the same 401 body. A valid key of a
 * frozen tenant gets 403 `tenant_frozen`: its holder already knows the key is real.
 */
export function requireApiKey(
  services: Services,
  render: (c: Context<KeyEnv>, error: AppError) => Response = errorResponse,
): MiddlewareHandler<KeyEnv> {
  return async (c, next) => {
    const token = bearerToken(c.req.header('authorization'));
    const checked = token === undefined ? undefined : await services.keys.check(token);
    if (checked?.ok !== true) {
      if (checked?.reason === 'tenant_frozen')
        return render(c, new AppError('tenant_frozen', 'This tenant is frozen; ask its administrator'));
      c.header('WWW-Authenticate', 'Bearer');
      return render(c, new AppError('unauthorized', 'A valid API key is required'));
    }
    c.set('apiKey', checked.key);
    await next();
  };
}
