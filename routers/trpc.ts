import { getErrorShape, initTRPC, StandardSchemaV1Error, TRPCError } from '@trpc/server';
import type { Context as HonoContext } from 'hono';
import { ANONYMOUS, type Caller, resolveCaller } from '../src/auth/caller.js';
import { AppError, toTRPCError } from '../src/errors.js';
import type { AppEnv } from '../src/http/context.js';
import { requestBucket } from '../src/limits/auth-failures.js';
import { rateLimitHeaders } from '../src/limits/headers.js';
import { type PreAuthDecision, rateLimitedError } from '../src/limits/preauth.js';
import type { Logger } from '../src/observability/logger.js';
import type { Services } from '../src/services.js';
import { isTenantFrozen } from '../src/tenants/tenants.js';

/** What every procedure receives. `caller` is narrowed by the base procedures below. */
export type Context = {
  services: Services;
  caller: Caller;
  requestId: string;
  log: Logger;
};

/**
 * Runs once per request, before any call of a batch. A bearer that was sent but does not resolve
 * to a caller counts against the client's failed-authentication budget
 * (src/limits/auth-failures.ts; no header at all does not); past it, such a client gets 429 — a
 * signed token that verifies still works, so valid callers behind a shared address are not locked
 * out, but the static ADMIN_TOKEN is not compared for it (no guessing past the budget).
 */
export async function createContext(
  services: Services,
  request: {
    authorization: string | undefined;
    requestId: string;
    log: Logger;
    /** The request, for its client's rate-limit bucket (src/http/client-ip.ts). */
    http: HonoContext;
  },
): Promise<Context> {
  const refusal = services.authFailures.refusal(services, request.http);
  // A blocked client may still present a signed token (it cannot be guessed), not the static one.
  const caller = await resolveCaller(services, request.authorization, {
    bootstrapToken: refusal === undefined,
  });
  if (caller.kind === 'anonymous' && (request.authorization ?? '').trim() !== '') {
    if (refusal !== undefined) throw tooManyFailures(refusal, request.requestId);
    const decision = await services.authFailures.fail(requestBucket(services, request.http));
    if (!decision.allowed) throw tooManyFailures(decision, request.requestId);
  }
  return { services, caller, requestId: request.requestId, log: request.log };
}

function tooManyFailures(decision: PreAuthDecision, requestId: string): TRPCError {
  const error = rateLimitedError(decision, 'Too many failed authentications from this address');
  // Thrown while the context is built, so the error formatter has no ctx: the id rides in the details.
  return toTRPCError(new AppError(error.code, error.message, { ...error.details, requestId }));
}

/**
 * `Retry-After` and `RateLimit-*` on a 429 (as the raw routes send them), from the details of the
 * `rate_limited` error; tRPC passes this the errors of the whole request.
 */
export function responseMeta({ errors }: { errors: TRPCError[] }): { headers?: Record<string, string> } {
  const limited = errors
    .map((error) => error.cause)
    .find((cause) => cause instanceof AppError && cause.code === 'rate_limited');
  if (!(limited instanceof AppError)) return {};
  const { limit, retryAfterMs } = limited.details;
  if (typeof limit !== 'number' || typeof retryAfterMs !== 'number') return {};
  return { headers: rateLimitHeaders({ limit, remaining: 0, resetInMs: retryAfterMs, retryAfterMs }) };
}

export interface InputIssue {
  path: string;
  message: string;
}

const t = initTRPC.context<Context>().create({
  // Never put stack traces in responses, whatever NODE_ENV says.
  isDev: false,
  errorFormatter({ shape, error, ctx }) {
    const appError = error.cause instanceof AppError ? error.cause : undefined;
    const issues = error.cause instanceof StandardSchemaV1Error ? describeIssues(error.cause) : undefined;
    const internal = error.code === 'INTERNAL_SERVER_ERROR' && appError === undefined;
    return {
      code: shape.code,
      message: internal ? 'Internal error' : issues ? `Invalid input: ${summarise(issues)}` : shape.message,
      data: {
        code: shape.data.code,
        httpStatus: shape.data.httpStatus,
        path: shape.data.path,
        requestId: ctx?.requestId,
        ...(appError === undefined ? {} : { appCode: appError.code, ...appError.details }),
        ...(issues === undefined ? {} : { issues }),
      },
    };
  },
});

function describeIssues(error: StandardSchemaV1Error): InputIssue[] {
  return error.issues.map((issue) => ({
    path: (issue.path ?? [])
      .map((segment) => String(typeof segment === 'object' ? segment.key : segment))
      .join('.'),
    message: issue.message,
  }));
}

function summarise(issues: InputIssue[]): string {
  return issues.map((issue) => (issue.path ? `${issue.path}: ${issue.message}` : issue.message)).join('; ');
}

export const router = t.router;

/**
 * A refusal written before tRPC runs (the pre-auth limit in front of /trpc), in the shape every
 * procedure error has, so a tRPC client reads it as a TRPCClientError with `data.httpStatus`.
 * One object, not an array: tRPC's batch link hands it to every call of the batch.
 */
export function trpcErrorResponse(services: Services) {
  return (c: HonoContext<AppEnv>, error: AppError): Response => {
    const ctx: Context = { services, caller: ANONYMOUS, requestId: c.get('requestId'), log: c.get('log') };
    const shape = getErrorShape({
      config: t._config,
      error: toTRPCError(error),
      type: 'unknown',
      path: undefined,
      input: undefined,
      ctx,
    });
    return c.json({ error: shape }, error.status);
  };
}

/** Every procedure starts here: an `AppError` thrown by domain code becomes its tRPC code. */
export const publicProcedure = t.procedure.use(async ({ next }) => {
  const result = await next();
  if (!result.ok && result.error.code === 'INTERNAL_SERVER_ERROR' && result.error.cause instanceof AppError) {
    throw toTRPCError(result.error.cause);
  }
  return result;
});

function requireCaller(ctx: Context): Exclude<Caller, { kind: 'anonymous' }> {
  if (ctx.caller.kind === 'anonymous') {
    throw new TRPCError({ code: 'UNAUTHORIZED', message: 'A valid bearer token is required' });
  }
  return ctx.caller;
}

/** Admins and operators (read-only admin). For queries only. */
export const operatorProcedure = publicProcedure.use(({ ctx, next }) => {
  const caller = requireCaller(ctx);
  if (caller.kind !== 'admin' && caller.kind !== 'operator') {
    throw new TRPCError({ code: 'FORBIDDEN', message: 'An operator or admin token is required' });
  }
  return next({ ctx: { ...ctx, caller } });
});

/** Callers with full rights. Handlers below it never re-check auth. */
export const adminProcedure = publicProcedure.use(({ ctx, next }) => {
  const caller = requireCaller(ctx);
  if (caller.kind !== 'admin')
    throw new TRPCError({ code: 'FORBIDDEN', message: 'An admin token is required' });
  return next({ ctx: { ...ctx, caller } });
});

function tenantResolver(caller: Exclude<Caller, { kind: 'anonymous' }>) {
  return (requested: string | undefined): string => {
    if (caller.kind === 'member') {
      if (requested !== undefined && requested !== caller.tenantId) {
        throw new TRPCError({ code: 'NOT_FOUND', message: `No tenant ${requested}` });
      }
      return caller.tenantId;
    }
    if (requested === undefined)
      throw new TRPCError({ code: 'BAD_REQUEST', message: 'tenantId is required' });
    return requested;
  };
}

/**
 * For calls on one object with a global id (a key): the tenant it must belong to — a member's
 * own — or, for an admin or operator who named none, `undefined` (the object's own tenant).
 */
function scopeResolver(caller: Exclude<Caller, { kind: 'anonymous' }>) {
  const tenantFor = tenantResolver(caller);
  return (requested: string | undefined): string | undefined =>
    caller.kind === 'member' ? tenantFor(requested) : requested;
}

/**
 * Tenant-scoped changes: a member on its own tenant, or an admin naming one (never an operator).
 * A frozen tenant's members change nothing; admins still can (to unfreeze it, to revoke its keys).
 * The freeze check is one primary-key read, made only on member mutations.
 */
export const tenantWriteProcedure = publicProcedure.use(async ({ ctx, next }) => {
  const caller = requireCaller(ctx);
  if (caller.kind === 'operator')
    throw new TRPCError({ code: 'FORBIDDEN', message: 'Operators are read-only' });
  if (caller.kind === 'member' && (await isTenantFrozen(ctx.services, caller.tenantId)))
    throw toTRPCError(new AppError('tenant_frozen', `Tenant ${caller.tenantId} is frozen`));
  return next({
    ctx: { ...ctx, caller, tenantFor: tenantResolver(caller), scopeFor: scopeResolver(caller) },
  });
});

/**
 * Tenant-scoped reads: a member acts on the tenant in its token; an admin or operator names the
 * tenant. `ctx.tenantFor(input.tenantId)` gives the tenant to act on. A member naming another
 * tenant gets NOT_FOUND, exactly as for a tenant that does not exist, so ids cannot be probed.
 */
export const tenantReadProcedure = publicProcedure.use(({ ctx, next }) => {
  const caller = requireCaller(ctx);
  return next({
    ctx: { ...ctx, caller, tenantFor: tenantResolver(caller), scopeFor: scopeResolver(caller) },
  });
});
