import * as v from 'valibot';
import { getBalance } from '../../src/billing/balance.js';
import { createInvoice, listPacks, listPayments, usage } from '../../src/payments/invoices.js';
import { TenantId } from '../inputs.js';
import { router, tenantReadProcedure, tenantWriteProcedure } from '../trpc.js';

/** A pack name as PAYMENT_PACKS spells them; an unknown one is a 400 naming the packs there are. */
const PackName = v.pipe(v.string(), v.regex(/^[a-z][a-z0-9_-]{0,31}$/, 'must be a pack name'));

/**
 * An instant as ISO 8601: a UTC date (`2026-03-01`, its midnight) or a date-time with its zone
 * (`2026-03-01T12:00:00Z`). A date past its month's end (`2026-02-30`) is refused, not rolled over.
 */
const Instant = v.pipe(
  v.string(),
  v.regex(
    /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2}))?$/,
    'must be an ISO 8601 date (2026-03-01) or date-time with a zone (2026-03-01T00:00:00Z)',
  ),
  v.check((text) => {
    const day = new Date(`${text.slice(0, 10)}T00:00:00Z`);
    return !Number.isNaN(day.getTime()) && day.toISOString().startsWith(text.slice(0, 10));
  }, 'must be a real calendar date'),
  v.transform((text) => new Date(text)),
  v.check((date) => !Number.isNaN(date.getTime()), 'must be a real time of day'),
);

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
      createInvoice(ctx.services, {
        tenantId: ctx.tenantFor(input.tenantId),
        pack: input.pack,
        requestedBy: ctx.caller.subject,
      }),
    ),
  payments: tenantReadProcedure
    .input(ForTenant)
    .query(({ ctx, input }) => listPayments(ctx.services, ctx.tenantFor(input.tenantId))),
  usage: tenantReadProcedure
    .input(
      v.optional(
        v.object({ tenantId: v.optional(TenantId), from: v.optional(Instant), to: v.optional(Instant) }),
        {},
      ),
    )
    .query(({ ctx, input }) =>
      usage(ctx.services, ctx.tenantFor(input.tenantId), { from: input.from, to: input.to }),
    ),
});
