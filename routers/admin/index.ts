import * as v from 'valibot';
import { auditActor, PLATFORM_CHAIN } from '../../src/audit/audit.js';
import { verifyAudit } from '../../src/audit/verify.js';
import { grantCredits } from '../../src/billing/credits.js';
import { adminUsage } from '../../src/billing/usage.js';
import { getFlags, setFlag } from '../../src/flags/admin-flags.js';
import { FLAGS } from '../../src/flags/feature-flags.js';
import { conservationStatus } from '../../src/ledger/conservation.js';
import { poolDecisionReport } from '../../src/ledger/pool-decisions.js';
import { reconcilePayment, stuckPayments } from '../../src/payments/reconcile.js';
import { getPricing, setPrice } from '../../src/pricing/admin-pricing.js';
import { POOLS } from '../../src/pricing/pricing.js';
import { issueToken } from '../../src/signing/caller-tokens.js';
import { systemInfo } from '../../src/system/info.js';
import { createTenant, getTenant, listTenants, updateTenant } from '../../src/tenants/tenants.js';
import { CapMicro, GrantId, Instant, Name, PositiveMicro, TenantId, Text, UsageQuery } from '../inputs.js';
import { adminProcedure, operatorProcedure, router } from '../trpc.js';

const CreateTenantInput = v.object({
  name: Name(200),
  tier: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(9)),
});

const GrantCreditsInput = v.object({
  tenantId: TenantId,
  amountMicro: PositiveMicro,
  reason: Text(500),
  grantId: v.optional(GrantId),
});

// Our payment ids (`pay_…`, src/ids.ts); anything else cannot name one.
const PaymentId = v.pipe(v.string(), v.regex(/^pay_[0-9a-f]{32}$/, 'must be a payment id (pay_…)'));

const IssueTokenInput = v.object({
  role: v.picklist(['admin', 'operator', 'member']),
  tenantId: v.optional(TenantId),
  ttlSeconds: v.optional(v.pipe(v.number(), v.integer(), v.minValue(60))),
  subject: v.optional(v.pipe(v.string(), v.regex(/^[A-Za-z0-9_.@:-]{1,128}$/, 'must be a plain identifier'))),
});

export const adminRouter = router({
  system: router({
    info: operatorProcedure.query(({ ctx }) => systemInfo(ctx.services)),
  }),
  tenants: router({
    create: adminProcedure
      .input(CreateTenantInput)
      .mutation(({ ctx, input }) => createTenant(ctx.services, input, auditActor(ctx.caller, ctx.requestId))),
    list: operatorProcedure.query(({ ctx }) => listTenants(ctx.services)),
    get: operatorProcedure
      .input(v.object({ id: TenantId }))
      .query(({ ctx, input }) => getTenant(ctx.services, input.id)),
    update: adminProcedure
      .input(
        v.object({
          id: TenantId,
          tier: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(9))),
          monthlyCapMicro: v.optional(v.nullable(CapMicro)),
          frozen: v.optional(v.boolean()),
        }),
      )
      .mutation(({ ctx, input }) => updateTenant(ctx.services, input, auditActor(ctx.caller, ctx.requestId))),
  }),
  credits: router({
    grant: adminProcedure.input(GrantCreditsInput).mutation(({ ctx, input }) =>
      grantCredits(ctx.services, {
        ...input,
        grantedBy: ctx.caller.subject,
        by: auditActor(ctx.caller, ctx.requestId),
      }),
    ),
  }),
  // A live check of the tenant's store balance against the book; repairs nothing (the job does).
  conservation: adminProcedure
    .input(v.object({ tenantId: TenantId }))
    .query(({ ctx, input }) => conservationStatus(ctx.services, input.tenantId)),
  payments: router({
    // Open payments older than 30 min and every partially_paid one, oldest first.
    stuck: operatorProcedure.query(({ ctx }) => stuckPayments(ctx.services)),
    // Reads the payment from the provider and applies it; its webhook event names the admin.
    reconcile: adminProcedure
      .input(v.object({ paymentId: PaymentId }))
      .mutation(({ ctx, input }) =>
        reconcilePayment(
          ctx.services,
          { paymentId: input.paymentId, requestId: `admin:${ctx.caller.subject}:${ctx.requestId}` },
          auditActor(ctx.caller, ctx.requestId),
        ),
      ),
  }),
  // Usage and pool decisions (reads, for admins and operators), from the spend and pool_decisions tables.
  // groupBy: one cut of day | pool | key | user; absent, all four.
  usage: operatorProcedure
    .input(v.object({ tenantId: TenantId, ...UsageQuery }))
    .query(({ ctx, input }) => adminUsage(ctx.services, input)),
  poolDecisions: operatorProcedure
    .input(
      v.optional(
        v.object({
          tenantId: v.optional(TenantId),
          from: v.optional(Instant),
          to: v.optional(Instant),
          pool: v.optional(v.picklist(POOLS)),
        }),
        {},
      ),
    )
    .query(({ ctx, input }) => poolDecisionReport(ctx.services, input)),
  signingKeys: router({
    list: operatorProcedure.query(({ ctx }) => ctx.services.signing.list()),
    rotate: adminProcedure.mutation(({ ctx }) =>
      ctx.services.signing.rotate(auditActor(ctx.caller, ctx.requestId)),
    ),
  }),
  audit: router({
    // Walks a tenant's chain (or 'platform', signing-key rotations) and names the first row edited or removed.
    verify: operatorProcedure
      .input(v.object({ tenantId: v.union([TenantId, v.literal(PLATFORM_CHAIN)]) }))
      .query(({ ctx, input }) => verifyAudit(ctx.services, input.tenantId)),
  }),
  // Runtime pricing and feature flags (docs: "Runtime pricing and flags"): every instance applies
  // a change within a second or two; `null` removes a price or a flag (back to the fallback).
  pricing: router({
    get: operatorProcedure.query(({ ctx }) => getPricing(ctx.services)),
    set: adminProcedure
      .input(
        v.object({
          pool: v.picklist(POOLS, `must be one of ${POOLS.join(', ')}`),
          microPer1kTokens: v.nullable(PositiveMicro),
          tenantId: v.optional(TenantId),
        }),
      )
      .mutation(({ ctx, input }) => setPrice(ctx.services, input, auditActor(ctx.caller, ctx.requestId))),
  }),
  flags: router({
    get: operatorProcedure.query(({ ctx }) => getFlags(ctx.services)),
    set: adminProcedure
      .input(
        v.object({
          flag: v.picklist(FLAGS, `must be one of ${FLAGS.join(', ')}`),
          enabled: v.nullable(v.boolean()),
          tenantId: v.optional(TenantId),
        }),
      )
      .mutation(({ ctx, input }) => setFlag(ctx.services, input, auditActor(ctx.caller, ctx.requestId))),
  }),
  tokens: router({
    issue: adminProcedure
      .input(IssueTokenInput)
      .mutation(({ ctx, input }) => issueToken(ctx.services, input, auditActor(ctx.caller, ctx.requestId))),
  }),
});
