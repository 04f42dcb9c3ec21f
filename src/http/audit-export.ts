import { TRPCError } from '@trpc/server';
import { Hono } from 'hono';
import * as v from 'valibot';
import type { AuditEventRow } from '../../db/schema/index.js';
import { Instant, TenantId } from '../../routers/inputs.js';
import { createContext } from '../../routers/trpc.js';
import { auditPages, PLATFORM_CHAIN } from '../audit/audit.js';
import { requireChain } from '../audit/verify.js';
import { AppError } from '../errors.js';
import type { Services } from '../services.js';
import { type AppEnv, errorResponse } from './context.js';

const ExportQuery = v.object({
  id: v.union([TenantId, v.literal(PLATFORM_CHAIN)], 'must be a tenant id (ten_…) or "platform"'),
  from: v.optional(Instant),
  to: v.optional(Instant),
});

/**
 * GET /api/v1/admin/tenants/:id/audit.jsonl?from&to — a tenant's audit chain (or the platform's),
 * one JSON object per line in seq order, for admin and operator bearers (resolved as tRPC resolves
 * them, failed-authentication budget included). Streamed a page at a time as the client reads, so
 * an export of any length holds about one page. `from` is inclusive, `to` exclusive.
 */
export function auditExportRoute(services: Services): Hono<AppEnv> {
  return new Hono<AppEnv>().get('/api/v1/admin/tenants/:id/audit.jsonl', async (c) => {
    let context: Awaited<ReturnType<typeof createContext>>;
    try {
      context = await createContext(services, {
        authorization: c.req.header('authorization'),
        requestId: c.get('requestId'),
        log: c.get('log'),
        http: c,
      });
    } catch (error) {
      // Past the failed-authentication budget: the 429 in this route's shape.
      if (error instanceof TRPCError && error.cause instanceof AppError) return errorResponse(c, error.cause);
      throw error;
    }
    const { caller } = context;
    if (caller.kind === 'anonymous') {
      return errorResponse(c, new AppError('unauthorized', 'A valid bearer token is required'));
    }
    if (caller.kind === 'member') {
      return errorResponse(c, new AppError('forbidden', 'An operator or admin token is required'));
    }
    const parsed = v.safeParse(
      ExportQuery,
      {
        id: c.req.param('id'),
        ...withoutEmpty({ from: c.req.query('from'), to: c.req.query('to') }),
      },
      { abortPipeEarly: true },
    );
    if (!parsed.success) {
      const issues = parsed.issues.map((issue) => ({
        path: v.getDotPath(issue) ?? '',
        message: issue.message,
      }));
      const summary = issues.map((issue) => `${issue.path}: ${issue.message}`).join('; ');
      return errorResponse(c, new AppError('invalid_request', `Invalid input: ${summary}`, { issues }));
    }
    const { id: chain, from, to } = parsed.output;
    await requireChain(services, chain);

    const pages = auditPages(services.db, chain, { from, to });
    const encoder = new TextEncoder();
    const log = c.get('log');
    // The first page is read before the answer starts, so a database fault is a 5xx, not a 200
    // whose body breaks; the rest is pulled as the client reads, one page ahead.
    let first: IteratorResult<AuditEventRow[]> | undefined = await pages.next();
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const next = first ?? (await pages.next());
          first = undefined;
          if (next.done === true) controller.close();
          else controller.enqueue(encoder.encode(next.value.map(exportLine).join('')));
        } catch (error) {
          log.error({ err: error, chain }, 'audit export failed while streaming');
          controller.error(error);
        }
      },
      async cancel() {
        await pages.return(undefined);
      },
    });
    log.info({ chain, role: caller.kind }, 'audit export started');
    return c.body(body, 200, {
      'content-type': 'application/x-ndjson; charset=utf-8',
      'content-disposition': `attachment; filename="audit-${chain}.jsonl"`,
      'cache-control': 'no-store',
    });
  });
}

/**
 * One exported row: everything its hash covers, so anyone can re-check the chain offline
 * (docs/audit.md). Actors are pseudonyms; summaries hold no free text, e-mail addresses, IPs or secrets.
 */
export function exportLine(row: AuditEventRow): string {
  return `${JSON.stringify({
    seq: row.seq,
    timestamp: row.at.toISOString(),
    tenant_id: row.tenantId,
    action: row.action,
    target: row.target,
    amount_micro: row.amountMicro === null ? null : row.amountMicro.toString(),
    pool: row.pool,
    actor: row.actor,
    actor_role: row.actorRole,
    summary: row.summary,
    request_id: row.requestId,
    prev_hash: row.prevHash,
    hash: row.hash,
  })}\n`;
}

/** Query parameters sent empty count as absent. */
function withoutEmpty(values: Record<string, string | undefined>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(values).filter(
      (entry): entry is [string, string] => entry[1] !== undefined && entry[1] !== '',
    ),
  );
}
