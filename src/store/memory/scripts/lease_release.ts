import { leaseKeys, type Script } from './shared.js';

/**
 * lease_release: give a lease back, only if this holder still has it. The contract is
 * lua/lease_release.v1.lua.
 */
export const leaseRelease: Script = (kv, keys, args) => {
  const { lease } = leaseKeys(keys[0]);
  if (kv.get(lease) === args[0]) {
    kv.del(lease);
    return ['RELEASED'];
  }
  return ['NOT_HELD'];
};
