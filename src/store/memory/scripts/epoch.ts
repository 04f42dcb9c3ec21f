import type { Script } from './shared.js';

/**
 * epoch: a counter that only grows, read or bumped, for "something changed, drop your caches"
 * signals. The contract is lua/epoch.v1.lua.
 */
export const epoch: Script = (kv, keys, args) => {
  const key = `${keys[0] ?? ''}:epoch`;
  if (args[0] === 'bump') kv.incrBy(key, 1);
  else if (args[0] !== 'get') return ['INVALID_INPUT', 'op'];
  return ['EPOCH', kv.get(key) ?? '0'];
};
