import { timingSafeEqual } from 'node:crypto';
import { eq, sql } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import { type ApiKeyRow, apiKeys, tenants } from '../../db/schema/index.js';
import { asAdmin, asKeyLookup, asTenant } from '../../db/scope.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../observability/logger.js';
import type { Store } from '../store/typed-store.js';
import { hashSecret, newSalt, parseKey } from './format.js';
import type { Peppers } from './peppers.js';

/** What a verified key lets a request do. */
export interface VerifiedKey {
  id: string;
  tenantId: string;
  tenantTier: number;
  tenantMonthlyCapMicro: bigint | null;
  prefix: string;
  sandbox: boolean;
  scopes: string[];
  rpmLimit: number | null;
  tpdLimit: number | null;
  monthlyCapMicro: bigint | null;
}

/**
 * The verdict on a presented key: a valid key, or why not. `tenant_frozen` only for a key that
 * is itself valid (right secret, not revoked), so it tells nothing to a caller without one.
 */
export type KeyCheck = { ok: true; key: VerifiedKey } | { ok: false; reason: 'invalid' | 'tenant_frozen' };

const INVALID: KeyCheck = { ok: false, reason: 'invalid' };
const FROZEN: KeyCheck = { ok: false, reason: 'tenant_frozen' };

interface CachedKey {
  row: ApiKeyRow;
  tenantTier: number;
  tenantMonthlyCapMicro: bigint | null;
  tenantFrozen: boolean;
  cachedAt: number;
}

// 60 s: an entry is dropped at once when the keys' change counter moves (revoke, rotate, freeze), so the TTL
// only bounds memory and the staleness of a limit change.
const POSITIVE_TTL_MS = 60_000;
// 5 s for prefixes nobody has: a flood of made-up keys costs one lookup per prefix per 5 s, and a
// key created on another instance works here within a second (creation moves the counter too).
const NEGATIVE_TTL_MS = 5_000;
const MAX_CACHE_ENTRIES = 100_000;
// 1 s: revocation must reach every instance within 5 s; polling one counter each second costs one
// store call per second per instance.
export const CHANGES_POLL_MS = 1_000;
export const KEYS_CHANGES = 'api_keys';
// Written in batches off the request path.
const USAGE_FLUSH_MS = 5_000;

/**
 * Verifies API keys on the hot path: parse → prefix lookup (cached, with a negative cache) →
 * HMAC → constant-time compare. An unknown prefix costs a dummy HMAC, so it answers like a wrong
 * secret, in body and in time. Caches drop everything when the keys' change counter in the store moves.
 */
export class KeyVerifier {
  private readonly positive = new Map<string, CachedKey>();
  private readonly negative = new Map<string, number>();
  private readonly usage = new Map<string, number>();
  private seenChanges = -1;
  /** Moves on every forgetAll: a lookup that started before it must not refill the cache. */
  private generation = 0;
  private timers: ReturnType<typeof setInterval>[] = [];
  private readonly dummySalt = newSalt();

  constructor(
    private readonly db: Db,
    private readonly store: Store,
    readonly peppers: Peppers,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  /** Starts the change-counter poll and the usage writer (Node); Workers and tests may call the steps directly. */
  start(): void {
    this.timers.push(
      setInterval(() => void this.pollChanges().catch(() => undefined), CHANGES_POLL_MS),
      setInterval(
        () =>
          void this.flushUsage().catch((error) => this.log.warn({ err: error }, 'last_used_at flush failed')),
        USAGE_FLUSH_MS,
      ),
    );
    for (const timer of this.timers) timer.unref();
  }

  async stop(): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    await this.flushUsage().catch(() => undefined);
  }

  /** Drops every cache when the keys' change counter has moved since the last poll. */
  async pollChanges(): Promise<void> {
    const changes = await this.store.changeCounter({ name: KEYS_CHANGES });
    if (changes !== this.seenChanges) {
      this.seenChanges = changes;
      this.forgetAll();
    }
  }

  /** Called after a change on this instance: local caches go at once, others follow the counter. */
  async changed(): Promise<void> {
    this.forgetAll();
    this.seenChanges = await this.store.changeCounter({ name: KEYS_CHANGES, bump: true });
  }

  forgetAll(): void {
    this.generation += 1;
    this.positive.clear();
    this.negative.clear();
  }

  /** The key, or undefined for any key that may not be used (invalid, or of a frozen tenant). */
  async verify(presented: string): Promise<VerifiedKey | undefined> {
    const checked = await this.check(presented);
    return checked.ok ? checked.key : undefined;
  }

  /**
   * `cachedOnly`: only a key this instance already holds (no database work) can pass — for a client
   * past its failed-authentication budget, whose guesses must cost nothing more.
   */
  async check(presented: string, options: { cachedOnly?: boolean } = {}): Promise<KeyCheck> {
    const parsed = parseKey(presented);
    if (parsed === undefined) return INVALID;
    const now = this.clock.now();
    const entry = await this.lookup(parsed.prefix, now, options.cachedOnly === true);
    if (entry === undefined) {
      hashSecret(this.peppers.current.secret, this.dummySalt, parsed.secret);
      return INVALID;
    }
    const { row } = entry;
    const pepper = this.peppers.get(row.pepperVersion);
    const expected = Buffer.from(row.hash, 'base64');
    const actual = hashSecret(
      pepper ?? this.peppers.current.secret,
      Buffer.from(row.salt, 'base64'),
      parsed.secret,
    );
    const matches =
      pepper !== undefined && actual.length === expected.length && timingSafeEqual(actual, expected);
    // A revocation may lie in the future: the grace window of a rotation.
    const revoked = row.revokedAt !== null && row.revokedAt.getTime() <= now;
    if (!matches || revoked) return INVALID;
    if (entry.tenantFrozen) return FROZEN;

    this.usage.set(row.id, now);
    if (row.pepperVersion !== this.peppers.current.version) void this.rehash(row, parsed.secret);
    const key: VerifiedKey = {
      id: row.id,
      tenantId: row.tenantId,
      tenantTier: entry.tenantTier,
      tenantMonthlyCapMicro: entry.tenantMonthlyCapMicro,
      prefix: row.prefix,
      sandbox: row.sandbox,
      scopes: row.scopes,
      rpmLimit: row.rpmLimit,
      tpdLimit: row.tpdLimit,
      monthlyCapMicro: row.monthlyCapMicro,
    };
    return { ok: true, key };
  }

  private async lookup(prefix: string, now: number, cachedOnly: boolean): Promise<CachedKey | undefined> {
    const cached = this.positive.get(prefix);
    if (cached !== undefined && now - cached.cachedAt < POSITIVE_TTL_MS) return cached;
    if (cachedOnly) return undefined;
    const missedAt = this.negative.get(prefix);
    if (missedAt !== undefined && now - missedAt < NEGATIVE_TTL_MS) return undefined;

    const generation = this.generation;
    const [found] = await asKeyLookup(this.db, prefix, (tx) =>
      tx
        .select({
          row: apiKeys,
          tenantTier: tenants.tier,
          tenantMonthlyCapMicro: tenants.monthlyCapMicro,
          tenantFrozen: tenants.frozen,
        })
        .from(apiKeys)
        .innerJoin(tenants, eq(tenants.id, apiKeys.tenantId))
        .where(eq(apiKeys.prefix, prefix))
        .limit(1),
    );
    const entry = found === undefined ? undefined : { ...found, cachedAt: now };
    // A revocation that landed while the query ran must not be undone by caching its answer.
    if (generation !== this.generation) return entry;
    if (entry === undefined) {
      // Made-up prefixes only ever evict each other, never the cache of real keys.
      if (this.negative.size >= MAX_CACHE_ENTRIES) this.negative.clear();
      this.negative.set(prefix, now);
      return undefined;
    }
    if (this.positive.size >= MAX_CACHE_ENTRIES) this.positive.clear();
    this.positive.set(prefix, entry);
    return entry;
  }

  private async rehash(row: ApiKeyRow, secret: string): Promise<void> {
    try {
      const salt = newSalt();
      const { version, secret: pepper } = this.peppers.current;
      await asTenant(this.db, row.tenantId, (tx) =>
        tx
          .update(apiKeys)
          .set({
            salt: salt.toString('base64'),
            hash: hashSecret(pepper, salt, secret).toString('base64'),
            pepperVersion: version,
          })
          .where(eq(apiKeys.id, row.id)),
      );
      this.positive.delete(row.prefix);
      this.log.info({ keyId: row.id, pepperVersion: version }, 'API key rehashed with the newest pepper');
    } catch (error) {
      this.log.warn({ err: error, keyId: row.id }, 'API key rehash failed');
    }
  }

  /** Writes last_used_at for the keys used since the last flush, in one transaction; how many keys. */
  async flushUsage(): Promise<number> {
    if (this.usage.size === 0) return 0;
    // Sorted, so two instances flushing at once usually take row locks in the same order (a
    // deadlock would cost one batch of last_used_at times, which are informational).
    const batch = [...this.usage.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    this.usage.clear();
    // Keys of many tenants: platform work. One statement for the whole batch (a statement per key
    // held every key's row lock for as many round trips); never moved back by a later flush of an
    // older time. Ids are key ids and times ISO strings: plain array literals, nothing to quote.
    const ids = `{${batch.map(([id]) => id).join(',')}}`;
    const times = `{${batch.map(([, at]) => new Date(at).toISOString()).join(',')}}`;
    await asAdmin(this.db, (tx) =>
      tx.execute(
        sql`update ${apiKeys} set last_used_at = greatest(${apiKeys.lastUsedAt}, used.at)
            from unnest(${ids}::text[], ${times}::timestamptz[]) as used(id, at)
            where ${apiKeys.id} = used.id`,
      ),
    );
    return batch.length;
  }
}
