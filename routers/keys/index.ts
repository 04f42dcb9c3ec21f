import * as v from 'valibot';
import { auditActor } from '../../src/audit/audit.js';
import { createKey, getKey, listKeys, revokeKey, rotateKey, updateKey } from '../../src/keys/keys.js';
import { CapMicro, Name, RateLimit, TenantId } from '../inputs.js';
import { router, tenantReadProcedure, tenantWriteProcedure } from '../trpc.js';

const KeyId = v.pipe(v.string(), v.regex(/^key_[0-9a-f]{32}$/, 'must be a key id (key_…)'));
const Scope = v.pipe(v.string(), v.regex(/^[a-z][a-z0-9:._-]{0,63}$/, 'must be a scope name'));

const CreateKeyInput = v.object({
  tenantId: v.optional(TenantId),
  name: Name(100),
  sandbox: v.optional(v.boolean()),
  scopes: v.optional(v.pipe(v.array(Scope), v.maxLength(32))),
  rpmLimit: v.optional(RateLimit),
  tpdLimit: v.optional(RateLimit),
  monthlyCapMicro: v.optional(CapMicro),
});

const ById = v.object({ tenantId: v.optional(TenantId), id: KeyId });

/**
 * API keys of one tenant: members act on their own, admins name the tenant. Key ids are global, so
 * an admin or operator may name a key alone; a tenantId that does not own the key is NOT_FOUND.
 * The `keys` flag off (globally or for the tenant) stops creating and rotating keys — 503
 * `feature_disabled`, for admins too; revoking and updating stay possible.
 */
export const keysRouter = router({
  create: tenantWriteProcedure.input(CreateKeyInput).mutation(({ ctx, input }) => {
    const tenantId = ctx.tenantFor(input.tenantId);
    ctx.services.flags.require('keys', tenantId);
    return createKey(ctx.services, tenantId, input, auditActor(ctx.caller, ctx.requestId));
  }),
  list: tenantReadProcedure
    .input(v.optional(v.object({ tenantId: v.optional(TenantId) }), {}))
    .query(({ ctx, input }) => listKeys(ctx.services, ctx.tenantFor(input.tenantId))),
  get: tenantReadProcedure
    .input(ById)
    .query(({ ctx, input }) => getKey(ctx.services, ctx.scopeFor(input.tenantId), input.id)),
  revoke: tenantWriteProcedure
    .input(ById)
    .mutation(({ ctx, input }) =>
      revokeKey(ctx.services, ctx.scopeFor(input.tenantId), input.id, auditActor(ctx.caller, ctx.requestId)),
    ),
  rotate: tenantWriteProcedure
    .input(
      v.object({
        ...ById.entries,
        graceSeconds: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(7 * 86_400))),
      }),
    )
    .mutation(async ({ ctx, input }) => {
      const scope = ctx.scopeFor(input.tenantId);
      // An admin may name the key alone: the flag is its tenant's (one read, off the hot path).
      const tenantId = scope ?? (await getKey(ctx.services, undefined, input.id)).tenantId;
      ctx.services.flags.require('keys', tenantId);
      return rotateKey(ctx.services, scope, input, auditActor(ctx.caller, ctx.requestId));
    }),
  update: tenantWriteProcedure
    .input(
      v.object({
        ...ById.entries,
        rpmLimit: v.optional(v.nullable(RateLimit)),
        tpdLimit: v.optional(v.nullable(RateLimit)),
        monthlyCapMicro: v.optional(v.nullable(CapMicro)),
      }),
    )
    .mutation(({ ctx, input }) =>
      updateKey(ctx.services, ctx.scopeFor(input.tenantId), input, auditActor(ctx.caller, ctx.requestId)),
    ),
});
