import type { Reply } from '../../port.js';
import { arg, ident, indexKeys, ints, type Script } from './shared.js';

/**
 * tenant_index_page: up to `limit` tenants after a cursor (a tenant id), in byte order, with their
 * last active times. The contract is lua/tenant_index_page.v1.lua.
 */
export const tenantIndexPage: Script = (kv, keys, args) => {
  const { lastActive, ids } = indexKeys(keys[0]);
  const after = arg(args, 0);
  if (!ident(after, true)) return ['INVALID_INPUT', 'after'];
  const figures = ints(args, 1, ['limit']);
  if (typeof figures === 'string') return ['INVALID_INPUT', figures];
  const page = kv.zrangeByLexAfter(ids, after, figures.limit);
  const reply: Reply = ['PAGE', page.length === figures.limit ? (page.at(-1) ?? '') : ''];
  // 0 when only the id survived (never written so by these scripts): the tenant looks idle.
  for (const id of page) reply.push(id, kv.zscore(lastActive, id) ?? 0);
  return reply;
};
