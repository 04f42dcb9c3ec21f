import * as v from 'valibot';

/** Input pieces shared by several routers. */
export const TenantId = v.pipe(v.string(), v.regex(/^ten_[0-9a-f]{32}$/, 'must be a tenant id (ten_…)'));
