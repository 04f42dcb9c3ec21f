import { arg, leaseKeys, type Script } from './shared.js';

/**
 * fencing_cas: accept a singleton job's writes only from the live holder of the newest lease (the
 * token issued last, the lease still this holder's), as often as it writes. The contract is
 * lua/fencing_cas.v2.lua.
 */
export const fencingCas: Script = (kv, keys, args) => {
  const raw = arg(args, 0);
  if (raw.length > 16 || !(raw === '0' || /^[1-9]\d*$/.test(raw)) || Number(raw) > Number.MAX_SAFE_INTEGER) {
    return ['INVALID_INPUT', 'fencingToken'];
  }
  const token = Number(raw);
  const holder = arg(args, 1);
  if (!/^[A-Za-z0-9_.:-]{1,128}$/.test(holder)) return ['INVALID_INPUT', 'holder'];
  const { lease, token: issued, fence } = leaseKeys(keys[0]);
  const stored = kv.get(fence);
  if (stored !== null) {
    if (!/^\d+$/.test(stored) || stored.length > 16 || Number(stored) > Number.MAX_SAFE_INTEGER) {
      return ['CORRUPT'];
    }
    if (token < Number(stored)) return ['STALE', stored];
  }
  if (kv.get(issued) !== raw || kv.get(lease) !== holder) return ['STALE', stored ?? ''];
  kv.set(fence, raw);
  return ['OK'];
};
