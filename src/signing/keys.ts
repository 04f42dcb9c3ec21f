import { createHash } from 'node:crypto';
import { and, isNotNull, isNull, lte } from 'drizzle-orm';
import type { JWK } from 'jose';
import type { Db } from '../../db/index.js';
import { type SigningKeyRow, signingKeys } from '../../db/schema/index.js';
import { asAdmin } from '../../db/scope.js';
import { type AuditActor, appendAudit, SYSTEM_ACTOR } from '../audit/audit.js';
import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import { AppError } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import { SIGNING_ALG, type Signer } from './signer.js';

const DAY_MS = 86_400_000;

export interface SigningKey {
  kid: string;
  alg: string;
  createdAt: string;
  activatedAt: string;
  expiresAt: string | null;
  retiredAt: string | null;
  state: 'pending' | 'active' | 'published' | 'retired';
}

export interface Jwks {
  keys: JWK[];
}

/**
 * The gateway's signing keys: public halves in PostgreSQL, private halves behind the Signer.
 * Reads (JWKS, the active key) come from an in-process copy refreshed every few seconds, so the
 * JWKS keeps working while Redis or even the database is down.
 *
 * Rotation never breaks a verifier:
 *  1. the new key is published at once, but signs only after `JWKS_MAX_AGE_SECONDS` + clock skew,
 *     so every cached JWKS has seen it before a token carries its kid;
 *  2. the old key stays published until its last token has expired (the longest token lifetime)
 *     plus the cache lifetime and skew; then it is retired.
 */
/** The keys as last read from the database; can outlive one SigningKeys (Workers: per isolate). */
export interface KeyCache {
  rows: SigningKeyRow[];
  loadedAt: number;
}

export class SigningKeys {
  private jwksCache: { signature: string; body: string; etag: string; jwks: Jwks } | undefined;

  constructor(
    private readonly db: Db,
    private readonly signer: Signer,
    private readonly clock: Clock,
    private readonly config: Pick<
      Config,
      | 'jwksMaxAgeSeconds'
      | 'jwtClockSkewSeconds'
      | 's2sTokenTtlSeconds'
      | 'adminTokenMaxTtlSeconds'
      | 'signingRotateDays'
      | 'signingKeyMaxAgeDays'
    >,
    private readonly log: Logger,
    private readonly cache: KeyCache = { rows: [], loadedAt: 0 },
  ) {}

  private get rows(): SigningKeyRow[] {
    return this.cache.rows;
  }

  /** Reloads (start) when the copy is older than maxAgeMs. */
  async ensureFresh(maxAgeMs: number): Promise<void> {
    if (this.clock.now() - this.cache.loadedAt > maxAgeMs || this.rows.length === 0) await this.start();
  }

  get signerKind(): string {
    return this.signer.kind;
  }

  /** Loads the keys; on a first start with none, creates one and activates it at once. */
  async start(): Promise<void> {
    await this.refresh();
    if (this.rows.length === 0) {
      const now = new Date(this.clock.now());
      const { kid, publicJwk } = this.signer.configuredKeys()[0] ?? (await this.signer.createKey());
      await asAdmin(this.db, (tx) =>
        tx
          .insert(signingKeys)
          .values({
            kid,
            alg: SIGNING_ALG,
            publicJwk: publicJwk as Record<string, string>,
            createdAt: now,
            activatedAt: now,
          })
          .onConflictDoNothing(),
      );
      this.log.info({ kid }, 'first signing key created and activated');
      await this.refresh();
    }
    const missing = this.missingPrivateKeys();
    if (missing.length > 0) {
      this.log.error(
        { kids: missing },
        'this instance lacks the private half of the active or pending signing key: share the keys (a shared DATA_DIR, or SIGNING_PRIVATE_JWKS)',
      );
    }
  }

  /** Re-reads the table and marks keys whose publication has ended as retired. */
  async refresh(): Promise<void> {
    await this.signer.reload();
    const now = new Date(this.clock.now());
    const rows = await asAdmin(this.db, async (tx) => {
      const read = await tx.select().from(signingKeys).orderBy(signingKeys.activatedAt);
      if (!read.some((row) => row.retiredAt === null && row.expiresAt !== null && row.expiresAt <= now))
        return read;
      await tx
        .update(signingKeys)
        .set({ retiredAt: now })
        .where(
          and(
            isNull(signingKeys.retiredAt),
            isNotNull(signingKeys.expiresAt),
            lte(signingKeys.expiresAt, now),
          ),
        );
      return tx.select().from(signingKeys).orderBy(signingKeys.activatedAt);
    });
    this.cache.rows = rows;
    this.cache.loadedAt = this.clock.now();
  }

  /** The key that signs now: the most recently activated one still published. */
  active(): SigningKeyRow | undefined {
    const now = this.clock.now();
    return this.rows.filter((row) => row.activatedAt.getTime() <= now && isPublished(row, now)).at(-1);
  }

  /** Signs with the active key. */
  async sign(claims: Record<string, unknown>): Promise<string> {
    const key = this.active();
    if (key === undefined) throw new Error('no active signing key');
    return this.signer.signJwt(key.kid, claims);
  }

  /** Every published, unexpired public key (pending ones included), with a strong ETag. */
  jwks(): { jwks: Jwks; body: string; etag: string } {
    const now = this.clock.now();
    const published = this.rows.filter((row) => isPublished(row, now) && row.createdAt.getTime() <= now);
    const signature = published.map((row) => `${row.kid}:${row.expiresAt?.getTime() ?? ''}`).join(',');
    if (this.jwksCache?.signature !== signature) {
      const jwks: Jwks = { keys: published.map((row) => publicOnly(row)) };
      const body = JSON.stringify(jwks);
      const etag = `"${createHash('sha256').update(body).digest('base64url')}"`;
      this.jwksCache = { signature, body, etag, jwks };
    }
    return this.jwksCache;
  }

  list(): SigningKey[] {
    const now = this.clock.now();
    const active = this.active();
    return this.rows.map((row) => ({
      kid: row.kid,
      alg: row.alg,
      createdAt: row.createdAt.toISOString(),
      activatedAt: row.activatedAt.toISOString(),
      expiresAt: row.expiresAt?.toISOString() ?? null,
      retiredAt: row.retiredAt?.toISOString() ?? null,
      state: !isPublished(row, now)
        ? 'retired'
        : row.kid === active?.kid
          ? 'active'
          : row.activatedAt.getTime() > now
            ? 'pending'
            : 'published',
    }));
  }

  /**
   * Starts a rotation: publishes a new key that activates after the JWKS cache lifetime and clock
   * skew, and schedules the end of publication of every older key. A rotation already pending is
   * returned as it is, so two callers do not make two keys. A new key is recorded in the
   * platform's audit chain (a job's rotation by the system actor).
   */
  async rotate(by: AuditActor = SYSTEM_ACTOR): Promise<SigningKey> {
    if (!this.signer.persistent) {
      throw new AppError(
        'conflict',
        'This signer cannot keep new keys (no key file): rotate by adding a key to SIGNING_PRIVATE_JWKS everywhere, or use a shared signer',
      );
    }
    await this.refresh();
    const now = this.clock.now();
    const pending = this.pendingKey(this.rows, now);
    if (pending !== undefined) return this.describe(pending.kid);

    const activatesAt = now + (this.config.jwksMaxAgeSeconds + this.config.jwtClockSkewSeconds) * 1000;
    const longestTokenMs =
      Math.max(this.config.s2sTokenTtlSeconds, this.config.adminTokenMaxTtlSeconds) * 1000;
    const oldExpireAt =
      activatesAt + longestTokenMs + (this.config.jwksMaxAgeSeconds + this.config.jwtClockSkewSeconds) * 1000;
    const { kid, publicJwk } = await this.signer.createKey();
    const chosen = await asAdmin(this.db, async (tx) => {
      // Locks every key row: two rotations at once are serialised, and the second finds the first —
      // read by a second statement: under READ COMMITTED the locking one keeps the snapshot it
      // started with, from before the rotation it waited for committed its new key.
      await tx.select({ kid: signingKeys.kid }).from(signingKeys).for('update');
      const locked = await tx.select().from(signingKeys);
      const raced = this.pendingKey(locked, now);
      if (raced !== undefined) return raced.kid;
      await tx
        .update(signingKeys)
        .set({ expiresAt: new Date(oldExpireAt) })
        .where(and(isNull(signingKeys.expiresAt), isNull(signingKeys.retiredAt)));
      await tx.insert(signingKeys).values({
        kid,
        alg: SIGNING_ALG,
        publicJwk: publicJwk as Record<string, string>,
        createdAt: new Date(now),
        activatedAt: new Date(activatesAt),
      });
      await appendAudit(tx, {
        by,
        tenantId: null,
        action: 'signing_key.rotate',
        target: kid,
        summary: {
          activatesAt: new Date(activatesAt).toISOString(),
          oldKeysExpireAt: new Date(oldExpireAt).toISOString(),
        },
        at: new Date(now),
      });
      return kid;
    });
    if (chosen === kid) {
      this.log.info(
        { kid, activatesAt: new Date(activatesAt).toISOString() },
        'signing key rotation started',
      );
    }
    await this.refresh();
    return this.describe(chosen);
  }

  private pendingKey(rows: SigningKeyRow[], now: number): SigningKeyRow | undefined {
    return rows.find((row) => row.activatedAt.getTime() > now && isPublished(row, now));
  }

  /** Active or pending keys this instance could not sign with. */
  private missingPrivateKeys(): string[] {
    const now = this.clock.now();
    const active = this.active();
    return this.rows
      .filter((row) => isPublished(row, now) && (row.kid === active?.kid || row.activatedAt.getTime() > now))
      .map((row) => row.kid)
      .filter((kid) => !this.signer.has(kid));
  }

  /** Age of the active key in days, and whether it passed SIGNING_KEY_MAX_AGE_DAYS. */
  health(): { activeKid: string | null; activeKeyAgeDays: number | null; warning: string | null } {
    const active = this.active();
    if (active === undefined)
      return { activeKid: null, activeKeyAgeDays: null, warning: 'no_active_signing_key' };
    const ageDays = (this.clock.now() - active.activatedAt.getTime()) / DAY_MS;
    const warning =
      this.missingPrivateKeys().length > 0
        ? 'signing_private_key_missing'
        : ageDays > this.config.signingKeyMaxAgeDays
          ? 'signing_key_older_than_max_age'
          : null;
    return { activeKid: active.kid, activeKeyAgeDays: Math.floor(ageDays * 10) / 10, warning };
  }

  /** Whether automatic rotation (SIGNING_ROTATE_DAYS) is due now. */
  rotationDue(): boolean {
    const days = this.config.signingRotateDays;
    if (days === undefined) return false;
    const now = this.clock.now();
    if (this.rows.some((row) => row.activatedAt.getTime() > now && isPublished(row, now))) return false;
    const active = this.active();
    return active === undefined || now - active.activatedAt.getTime() >= days * DAY_MS;
  }

  private describe(kid: string): SigningKey {
    const key = this.list().find((row) => row.kid === kid);
    if (key === undefined) throw new Error(`signing key ${kid} vanished`);
    return key;
  }
}

function isPublished(row: SigningKeyRow, now: number): boolean {
  return row.retiredAt === null && (row.expiresAt === null || row.expiresAt.getTime() > now);
}

/** Only public members, whatever the stored JWK holds. */
function publicOnly(row: SigningKeyRow): JWK {
  const { kty, crv, x, y } = row.publicJwk;
  return { kty, crv, x, y, kid: row.kid, alg: row.alg, use: 'sig' } as JWK;
}
