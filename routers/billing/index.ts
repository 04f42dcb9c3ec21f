import * as v from 'valibot';
import { getBalance } from '../../src/billing/balance.js';
import { TenantId } from '../inputs.js';
import { router, tenantReadProcedure } from '../trpc.js';

/** Packs, invoices and payments arrive with the billing feature. */
export const billingRouter = router({
  balance: tenantReadProcedure
    .input(v.optional(v.object({ tenantId: v.optional(TenantId) }), {}))
    .query(({ ctx, input }) => getBalance(ctx.services, ctx.tenantFor(input.tenantId))),
});
