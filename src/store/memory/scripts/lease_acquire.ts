import { arg, leaseKeys, type Script } from './shared.js';

/**
 * lease_acquire: take a singleton job's lease (SET NX PX) with a fencing token that only ever
 * grows, or renew it for the holder that has it (same token). The contract is
 * lua/lease_acquire.v2.lua.
 */
export const leaseAcquire: Script = (kv, keys, args) => {
  const holder = arg(args, 0);
  if (holder.length < 1 || holder.length > 128 || !/^[A-Za-z0-9_.:-]+$/.test(holder)) {
    return ['INVALID_INPUT', 'holder'];
  }
  const rawTtl = arg(args, 1);
  const ttl = rawTtl.length <= 7 && /^[1-9]\d*$/.test(rawTtl) ? Number(rawTtl) : null;
  if (ttl === null || ttl < 100 || ttl > 3_600_000) return ['INVALID_INPUT', 'ttlMs'];
  const { lease, token } = leaseKeys(keys[0]);
  const current = kv.get(token);
  if (
    current !== null &&
    (!/^\d+$/.test(current) || current.length > 16 || Number(current) > Number.MAX_SAFE_INTEGER)
  ) {
    return ['OVERFLOW'];
  }
  if (current !== null && kv.get(lease) === holder) {
    kv.pexpire(lease, ttl);
    return ['RENEWED', current];
  }
  if (current !== null && Number(current) >= Number.MAX_SAFE_INTEGER) return ['OVERFLOW'];
  if (!kv.set(lease, holder, { nx: true, pxMs: ttl })) return ['HELD', kv.get(lease) ?? '', kv.pttl(lease)];
  kv.incrBy(token, 1);
  return ['ACQUIRED', kv.get(token) ?? ''];
};
