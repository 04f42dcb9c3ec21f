import type { Reply } from '../../port.js';
import { arg, DAY_MS, ident, ints, num, type Script, tenantKeys } from './shared.js';

/**
 * budget_event: the 80 % / 100 % thresholds a tenant's scopes have reached, each reported once per
 * scope, subject and period (a SET NX marker read and written in the same step). The contract is
 * lua/budget_event.v1.lua.
 */

const MARKER_MS = 400 * DAY_MS;

export const budgetEvent: Script = (kv, keys, args) => {
  const base = keys[0] ?? '';
  const resId = arg(args, 0);
  if (!ident(resId, false)) return ['INVALID_INPUT', 'reservationId'];
  const caps = ints(args, 1, ['tenantMonthlyCapMicro', 'keyMonthlyCapMicro']);
  if (typeof caps === 'string') return ['INVALID_INPUT', caps];
  const { tenantMonthlyCapMicro: tenantCap, keyMonthlyCapMicro: keyCap } = caps;

  const [period, keyId] = kv.hmget(tenantKeys.reservation(base, resId), 'period', 'keyId');
  if (!period || !keyId) return ['INVALID_INPUT', 'reservationId'];
  const [balKey, monthKey, keyMonthKey] = tenantKeys.scopes(base, keyId, period);

  // used * 5 >= limit * 4, as used >= 4 * (limit - used): no intermediate figure passes 2^53.
  const reached = (used: number, limit: number, percent: number) =>
    used >= limit || (percent === 80 && used >= 4 * (limit - used));
  const out: Reply = ['THRESHOLDS', 0];
  const check = (scope: string, marker: string, periodName: string, used: number, limit: number) => {
    if (limit <= 0) return;
    for (const percent of [80, 100]) {
      if (
        reached(used, limit, percent) &&
        kv.set(`${marker}:${percent}`, '1', { nx: true, pxMs: MARKER_MS })
      ) {
        out[1] = (out[1] as number) + 1;
        out.push(scope, percent, periodName, used, limit);
      }
    }
  };

  const [credited, committed] = kv.hmget(balKey, 'credited', 'committed');
  const creditedText = credited ?? '0';
  check(
    'balance',
    `${base}:bev:bal:${creditedText}`,
    `credited:${creditedText}`,
    num(committed),
    num(creditedText),
  );
  if (tenantCap > 0) {
    const used = num(kv.hget(monthKey, 'committed'));
    check('tenant_monthly', `${base}:bev:m:${period}`, period, used, tenantCap);
  }
  if (keyCap > 0) {
    const used = num(kv.hget(keyMonthKey, 'committed'));
    check('key_monthly', `${base}:bev:km:${keyId}:${period}`, period, used, keyCap);
  }
  return out;
};
