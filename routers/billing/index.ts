import * as v from 'valibot';
import { auditActor } from '../../src/audit/audit.js';
import { getBalance } from '../../src/billing/balance.js';
import { adminUsage } from '../../src/billing/usage.js';
import { createInvoice, listPacks, listPayments } from '../../src/payments/invoices.js';
import { TenantId, UsageQuery } from '../inputs.js';
import { router, tenantReadProcedure, tenantWriteProcedure } from '../trpc.js';

/** A pack name as PAYMENT_PACKS spells them; an unknown one is a 400 naming the packs there are. */
const PackName = v.pipe(v.string(), v.regex(/^[a-z][a-z0-9_-]{0,31}$/, 'must be a pack name'));

const ForTenant = v.optional(v.object({ tenantId: v.optional(TenantId) }), {});

/**
 * A tenant's money: balance, the credit packs on sale, invoices for them, its payments and usage.
 * Members act on their own tenant; admins (and operators, for reads) name it.
 */
export const billingRouter = router({
  balance: tenantReadProcedure
    .input(ForTenant)
    .query(({ ctx, input }) => getBalance(ctx.services, ctx.tenantFor(input.tenantId))),
  packs: tenantReadProcedure.query(({ ctx }) => listPacks(ctx.services)),
  createInvoice: tenantWriteProcedure
    .input(v.object({ tenantId: v.optional(TenantId), pack: PackName }))
    .mutation(({ ctx, input }) =>
      createInvoice(
        ctx.services,
        { tenantId: ctx.tenantFor(input.tenantId), pack: input.pack, requestedBy: ctx.caller.subject },
        auditActor(ctx.caller, ctx.requestId),
      ),
    ),
  payments: tenantReadProcedure
    .input(ForTenant)
    .query(({ ctx, input }) => listPayments(ctx.services, ctx.tenantFor(input.tenantId))),
  usage: tenantReadProcedure
    .input(v.optional(v.object({ tenantId: v.optional(TenantId), ...UsageQuery }), {}))
    // A member gets for its own tenant what admin.usage gives: every cut and the projection.
    .query(({ ctx, input }) =>
      adminUsage(ctx.services, {
        tenantId: ctx.tenantFor(input.tenantId),
        from: input.from,
        to: input.to,
        groupBy: input.groupBy,
      }),
    ),
});
