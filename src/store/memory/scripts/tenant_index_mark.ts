import { arg, ident, indexKeys, ints, type Script } from './shared.js';

/**
 * tenant_index_mark: record that a tenant is active (ZADD GT: its time never moves back), so the
 * reaper finds it without scanning. The contract is lua/tenant_index_mark.v1.lua.
 */
export const tenantIndexMark: Script = (kv, keys, args) => {
  const { lastActive, ids } = indexKeys(keys[0]);
  const tenant = arg(args, 0);
  if (!ident(tenant, false)) return ['INVALID_INPUT', 'tenantId'];
  const figures = ints(args, 1, ['nowMs']);
  if (typeof figures === 'string') return ['INVALID_INPUT', figures];
  kv.zadd(lastActive, figures.nowMs, tenant, { gt: true });
  kv.zadd(ids, 0, tenant, { nx: true });
  return ['MARKED', kv.zscore(lastActive, tenant) ?? 0];
};
