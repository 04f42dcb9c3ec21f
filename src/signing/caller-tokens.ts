import { AppError } from '../errors.js';
import type { Services } from '../services.js';
import { getTenant } from '../tenants/tenants.js';
import { issueCallerToken, type Role } from './tokens.js';

/** `admin.tokens.issue` / `spicegate token`: checks the request, then signs with the active key. */
export async function issueToken(
  services: Services,
  input: {
    role: Role;
    tenantId?: string | undefined;
    ttlSeconds?: number | undefined;
    subject?: string | undefined;
  },
): Promise<{ token: string; expiresAt: string }> {
  const ttlSeconds = input.ttlSeconds ?? Math.min(3_600, services.config.adminTokenMaxTtlSeconds);
  if (ttlSeconds > services.config.adminTokenMaxTtlSeconds) {
    throw new AppError(
      'invalid_request',
      `ttlSeconds may be at most ${services.config.adminTokenMaxTtlSeconds}`,
    );
  }
  if (input.role === 'member') {
    if (input.tenantId === undefined)
      throw new AppError('invalid_request', 'A member token needs a tenantId');
    await getTenant(services, input.tenantId);
  } else if (input.tenantId !== undefined) {
    throw new AppError('invalid_request', 'Only member tokens carry a tenantId');
  }
  const issued = await issueCallerToken(services, {
    role: input.role,
    subject: input.subject ?? `cli-${input.role}`,
    ttlSeconds,
    ...(input.tenantId === undefined ? {} : { tenantId: input.tenantId }),
  });
  services.log.info(
    { role: input.role, tenantId: input.tenantId, expiresAt: issued.expiresAt },
    'caller token issued',
  );
  return issued;
}
