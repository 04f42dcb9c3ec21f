import { createHash } from 'node:crypto';
import { and, asc, desc, eq, gt, gte, lt, type SQL, sql } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import { type AuditEventRow, auditEvents, PLATFORM_CHAIN } from '../../db/schema/index.js';
import { asScope } from '../../db/scope.js';
import type { Caller } from '../auth/caller.js';

export { PLATFORM_CHAIN };

/** What an audit row says was done. */
export type AuditAction =
  | 'tenant.create'
  | 'tenant.update'
  | 'tenant.freeze'
  | 'tenant.unfreeze'
  | 'key.create'
  | 'key.revoke'
  | 'key.rotate'
  | 'key.update'
  | 'credits.grant'
  | 'credits.reverse'
  | 'signing_key.rotate'
  | 'payment.reconcile'
  | 'invoice.create'
  | 'invoice.discard'
  | 'pricing.set'
  | 'flags.set'
  | 'token.issue';

/** Who acted, pseudonymously, and in which request. */
export interface AuditActor {
  actor: string;
  role: 'admin' | 'operator' | 'member' | 'system';
  requestId: string | null;
}

/** Changes made by code that names no caller (a job, a test, the CLI's own set-up). */
export const SYSTEM_ACTOR: AuditActor = { actor: 'system', role: 'system', requestId: null };

/**
 * The caller as the audit trail names it: `act_` + the first 32 hex digits of sha256 over its
 * subject. A subject may be an e-mail address (an external issuer's `sub`); its digest is not, yet
 * whoever knows the subject can find its rows.
 */
export function auditActor(caller: Exclude<Caller, { kind: 'anonymous' }>, requestId: string): AuditActor {
  return { actor: pseudonym(caller.subject), role: caller.kind, requestId };
}

export function pseudonym(subject: string): string {
  return `act_${createHash('sha256').update(`spicegate:actor:${subject}`).digest('hex').slice(0, 32)}`;
}

type AuditValue = string | number | boolean | null | AuditValue[] | { [key: string]: AuditValue };

/** Before/after figures of a change: ids, flags, limits, amounts as decimal strings. Never free text or secrets. */
export type AuditSummary = { [key: string]: AuditValue };

export interface AuditEvent {
  by: AuditActor;
  /** Null for a platform-wide action (chained under PLATFORM_CHAIN). */
  tenantId: string | null;
  action: AuditAction;
  target: string;
  summary: AuditSummary;
  at: Date;
  amountMicro?: bigint | undefined;
  pool?: string | undefined;
}

/** The prev_hash of a chain's first row. */
export const GENESIS_HASH = '0'.repeat(64);

// Any constant: the class of the per-chain advisory locks (two-int keys do not meet bigint ones).
const AUDIT_LOCK_CLASS = 0x5a_0d_17;

/**
 * Appends one row to the event's chain inside the caller's transaction, so the row commits with
 * the change or not at all. A transaction-scoped advisory lock on the chain serialises appenders
 * (a chain's first row has no row to lock): call it last in the transaction, to hold it briefly.
 */
export async function appendAudit(tx: Db, event: AuditEvent): Promise<AuditEventRow> {
  const chain = event.tenantId ?? PLATFORM_CHAIN;
  await tx.execute(sql`select pg_advisory_xact_lock(${AUDIT_LOCK_CLASS}, hashtext(${chain}))`);
  const [head] = await tx
    .select({ seq: auditEvents.seq, hash: auditEvents.hash })
    .from(auditEvents)
    .where(eq(auditEvents.chain, chain))
    .orderBy(desc(auditEvents.seq))
    .limit(1);
  const content: AuditContent = {
    tenantId: event.tenantId,
    seq: (head?.seq ?? 0) + 1,
    at: event.at,
    actor: event.by.actor,
    actorRole: event.by.role,
    action: event.action,
    target: event.target,
    summary: event.summary,
    amountMicro: event.amountMicro ?? null,
    pool: event.pool ?? null,
    requestId: event.by.requestId,
  };
  const prevHash = head?.hash ?? GENESIS_HASH;
  const [row] = await tx
    .insert(auditEvents)
    .values({ ...content, prevHash, hash: auditHash(prevHash, content) })
    .returning();
  if (row === undefined) throw new Error('insert into audit_events returned no row');
  return row;
}

/** The hashed part of a row: everything but its id, chain (derived) and hashes. */
type AuditContent = Pick<
  AuditEventRow,
  | 'tenantId'
  | 'seq'
  | 'at'
  | 'actor'
  | 'actorRole'
  | 'action'
  | 'target'
  | 'summary'
  | 'amountMicro'
  | 'pool'
  | 'requestId'
>;

/**
 * sha256 (hex) over the previous row's hash followed by the row's canonical content: a JSON array
 * in a fixed order, the time as ISO 8601 with milliseconds, money as a decimal string, the
 * summary's keys sorted at every depth (jsonb does not keep their order). docs/audit.md spells it
 * out for verifiers outside the gateway.
 */
export function auditHash(prevHash: string, row: AuditContent): string {
  const canonical = JSON.stringify([
    row.tenantId,
    row.seq,
    row.at.toISOString(),
    row.actor,
    row.actorRole,
    row.action,
    row.target,
    sortKeys(row.summary),
    row.amountMicro === null ? null : row.amountMicro.toString(),
    row.pool,
    row.requestId,
  ]);
  return createHash('sha256').update(prevHash).update(canonical).digest('hex');
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.keys(value)
      .sort()
      .map((key) => [key, sortKeys((value as Record<string, unknown>)[key])]),
  );
}

// 1,000 rows: a page of a few hundred kB, so a walk of any length holds about that much.
export const AUDIT_PAGE_ROWS = 1000;

/** A chain's rows in seq order, a page at a time (keyset on seq), within [from, to) when given. */
export async function* auditPages(
  db: Db,
  chain: string,
  range: { from?: Date | undefined; to?: Date | undefined } = {},
  pageRows = AUDIT_PAGE_ROWS,
): AsyncGenerator<AuditEventRow[]> {
  let after = 0;
  for (;;) {
    const conditions: SQL[] = [eq(auditEvents.chain, chain), gt(auditEvents.seq, after)];
    if (range.from !== undefined) conditions.push(gte(auditEvents.at, range.from));
    if (range.to !== undefined) conditions.push(lt(auditEvents.at, range.to));
    // Each page in its own short transaction, as the chain's tenant (the platform's: the admin).
    const rows = await asScope(db, chain === PLATFORM_CHAIN ? undefined : chain, (tx) =>
      tx
        .select()
        .from(auditEvents)
        .where(and(...conditions))
        .orderBy(asc(auditEvents.seq))
        .limit(pageRows),
    );
    if (rows.length > 0) yield rows;
    const last = rows.at(-1);
    if (last === undefined || rows.length < pageRows) return;
    after = last.seq;
  }
}

export type AuditVerdict =
  | { ok: true; rows: number }
  /** `missing`: the row with this seq was removed; `edited`: its content or hash no longer hashes; `unlinked`: its prev_hash is not the previous row's hash. */
  | { ok: false; seq: number; reason: 'missing' | 'edited' | 'unlinked' };

/**
 * Walks a chain from its first row, recomputing every hash: the first row removed (a gap in seq)
 * or edited (a hash that does not match its content or its predecessor) is named. A chain cut
 * after its last row, or rewritten with every later hash recomputed, needs an outside copy of the
 * head to be seen (an export).
 */
export async function verifyChain(db: Db, chain: string): Promise<AuditVerdict> {
  let expected = 1;
  let prevHash = GENESIS_HASH;
  for await (const page of auditPages(db, chain)) {
    for (const row of page) {
      if (row.seq !== expected) return { ok: false, seq: expected, reason: 'missing' };
      if (row.prevHash !== prevHash) return { ok: false, seq: row.seq, reason: 'unlinked' };
      if (auditHash(row.prevHash, row) !== row.hash) return { ok: false, seq: row.seq, reason: 'edited' };
      prevHash = row.hash;
      expected += 1;
    }
  }
  return { ok: true, rows: expected - 1 };
}
