import { asScope } from '../../db/scope.js';
import { type AuditActor, appendAudit, pseudonym, SYSTEM_ACTOR } from '../audit/audit.js';
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
  by: AuditActor = SYSTEM_ACTOR,
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
  const subject = input.subject ?? `cli-${input.role}`;
  // Recorded in the transaction the token is handed out from: a token whose row did not commit is
  // never returned. The subject appears as its pseudonym only.
  const issued = await asScope(services.db, input.tenantId, async (tx) => {
    const token = await issueCallerToken(services, {
      role: input.role,
      subject,
      ttlSeconds,
      ...(input.tenantId === undefined ? {} : { tenantId: input.tenantId }),
    });
    await appendAudit(tx, {
      by,
      tenantId: input.tenantId ?? null,
      action: 'token.issue',
      target: pseudonym(subject),
      summary: { role: input.role, ttlSeconds, expiresAt: token.expiresAt },
      at: new Date(services.clock.now()),
    });
    return token;
  });
  services.log.info(
    { role: input.role, tenantId: input.tenantId, expiresAt: issued.expiresAt },
    'caller token issued',
  );
  return issued;
}
