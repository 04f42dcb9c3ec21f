import { num, type Script, tenantKeys } from './shared.js';

/**
 * snapshot: a tenant's balance figures (and its outbox, and whether the balance exists), read in
 * one atomic step. The contract is lua/snapshot.v2.lua.
 */
export const snapshot: Script = (kv, keys) => {
  const balKey = tenantKeys.balance(keys[0] ?? '');
  const [credited, committed, reserved, outbox] = kv
    .hmget(balKey, 'credited', 'committed', 'reserved', 'outbox')
    .map(num) as [number, number, number, number];
  return [
    'SNAPSHOT',
    credited,
    committed,
    reserved,
    credited - committed - reserved,
    outbox,
    kv.exists(balKey) ? 1 : 0,
  ];
};
