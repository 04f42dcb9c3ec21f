import { balanceOf, type Script } from './shared.js';

/**
 * snapshot: a tenant's balance figures, read in one atomic step. The contract is
 * lua/snapshot.v1.lua.
 */
export const snapshot: Script = (kv, keys) => {
  const { credited, committed, reserved } = balanceOf(kv, keys[0] ?? '');
  return ['SNAPSHOT', credited, committed, reserved, credited - committed - reserved];
};
