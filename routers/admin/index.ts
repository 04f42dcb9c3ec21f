import * as v from 'valibot';
import { systemInfo } from '../../src/system/info.js';
import { createTenant, getTenant, listTenants } from '../../src/tenants/tenants.js';
import { adminProcedure, router } from '../trpc.js';

const TenantId = v.pipe(v.string(), v.regex(/^ten_[0-9a-f]{32}$/, 'must be a tenant id (ten_…)'));

const CreateTenantInput = v.object({
  name: v.pipe(v.string(), v.trim(), v.minLength(1, 'must not be empty'), v.maxLength(200)),
  tier: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(9)),
});

export const adminRouter = router({
  system: router({
    info: adminProcedure.query(({ ctx }) => systemInfo(ctx.services)),
  }),
  tenants: router({
    create: adminProcedure
      .input(CreateTenantInput)
      .mutation(({ ctx, input }) => createTenant(ctx.services, input)),
    list: adminProcedure.query(({ ctx }) => listTenants(ctx.services)),
    get: adminProcedure
      .input(v.object({ id: TenantId }))
      .query(({ ctx, input }) => getTenant(ctx.services, input.id)),
  }),
});
