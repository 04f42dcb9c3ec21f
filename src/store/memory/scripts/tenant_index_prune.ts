import { arg, ident, indexKeys, ints, type Script } from './shared.js';

/**
 * tenant_index_prune: drop an idle tenant from the index unless it was marked after the cutoff (a
 * concurrent mark wins). The contract is lua/tenant_index_prune.v1.lua.
 */
export const tenantIndexPrune: Script = (kv, keys, args) => {
  const { lastActive, ids } = indexKeys(keys[0]);
  const tenant = arg(args, 0);
  if (!ident(tenant, false)) return ['INVALID_INPUT', 'tenantId'];
  const figures = ints(args, 1, ['cutoffMs']);
  if (typeof figures === 'string') return ['INVALID_INPUT', figures];
  const score = kv.zscore(lastActive, tenant);
  if (score === null) {
    kv.zrem(ids, tenant);
    return ['ABSENT'];
  }
  if (score > figures.cutoffMs) return ['KEPT', score];
  kv.zrem(lastActive, tenant);
  kv.zrem(ids, tenant);
  return ['PRUNED'];
};
