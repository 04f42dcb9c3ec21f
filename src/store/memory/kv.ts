/** A stream entry: its id (`<ms>-<seq>`) and its fields in the order they were added. */
export interface StreamEntry {
  id: string;
  fields: [string, string][];
}

/** A stream: entries in id order (ids only grow), and the last id ever given, as Redis keeps it. */
interface Stream {
  entries: Map<string, [string, string][]>;
  lastMs: number;
  lastSeq: number;
}

/**
 * The few Redis data structures the scripts use (strings, hashes, sorted sets, streams, expiry), in
 * process memory, with Redis's semantics for what the scripts rely on. Expiry is wall-clock, as in
 * Redis, and only collects garbage: no script's logic depends on a key expiring.
 */
export class MemoryKv {
  private readonly strings = new Map<string, string>();
  private readonly hashes = new Map<string, Map<string, string>>();
  private readonly zsets = new Map<string, Map<string, number>>();
  private readonly streams = new Map<string, Stream>();
  private readonly expiresAt = new Map<string, number>();
  private operations = 0;

  constructor(private readonly wallClockMs: () => number = Date.now) {}

  get(key: string): string | null {
    this.expire(key);
    return this.strings.get(key) ?? null;
  }

  set(key: string, value: string, options: { keepTtl?: boolean; nx?: boolean; pxMs?: number } = {}): boolean {
    this.expire(key);
    if (options.nx && this.exists(key)) return false;
    this.strings.set(key, value);
    if (options.pxMs !== undefined) this.expiresAt.set(key, this.wallClockMs() + options.pxMs);
    else if (!options.keepTtl) this.expiresAt.delete(key);
    return true;
  }

  incrBy(key: string, by: number): number {
    const next = Number(this.get(key) ?? '0') + by;
    this.strings.set(key, String(next));
    return next;
  }

  hget(key: string, field: string): string | null {
    this.expire(key);
    return this.hashes.get(key)?.get(field) ?? null;
  }

  hmget(key: string, ...fields: string[]): (string | null)[] {
    return fields.map((field) => this.hget(key, field));
  }

  hset(key: string, values: Record<string, string | number>): void {
    this.expire(key);
    let hash = this.hashes.get(key);
    if (!hash) {
      hash = new Map();
      this.hashes.set(key, hash);
    }
    for (const [field, value] of Object.entries(values)) hash.set(field, String(value));
  }

  hincrby(key: string, field: string, by: number): number {
    const next = Number(this.hget(key, field) ?? '0') + by;
    this.hset(key, { [field]: next });
    return next;
  }

  hexists(key: string, field: string): boolean {
    return this.hget(key, field) !== null;
  }

  /** ZADD; `gt`: an existing member's score only grows, `nx`: an existing member is left alone. */
  zadd(key: string, score: number, member: string, options: { gt?: boolean; nx?: boolean } = {}): void {
    this.expire(key);
    let zset = this.zsets.get(key);
    if (!zset) {
      zset = new Map();
      this.zsets.set(key, zset);
    }
    const current = zset.get(member);
    if (current !== undefined && (options.nx || (options.gt && score <= current))) return;
    zset.set(member, score);
  }

  zscore(key: string, member: string): number | null {
    this.expire(key);
    return this.zsets.get(key)?.get(member) ?? null;
  }

  /**
   * ZRANGEBYLEX of a set whose scores are all equal: members after `after` in byte order ("" =
   * from the first), at most `limit`. Members are ASCII here, so string order is byte order.
   */
  zrangeByLexAfter(key: string, after: string, limit: number): string[] {
    this.expire(key);
    const zset = this.zsets.get(key);
    if (!zset) return [];
    return [...zset.keys()]
      .filter((member) => after === '' || member > after)
      .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
      .slice(0, limit);
  }

  /** Members with score <= max, by score then member (Redis order), at most `limit`. */
  zrangeByScoreUpTo(key: string, max: number, limit: number): string[] {
    this.expire(key);
    const zset = this.zsets.get(key);
    if (!zset) return [];
    return [...zset.entries()]
      .filter(([, score]) => score <= max)
      .sort(([a, sa], [b, sb]) => sa - sb || (a < b ? -1 : a > b ? 1 : 0))
      .slice(0, limit)
      .map(([member]) => member);
  }

  zrem(key: string, member: string): void {
    this.zsets.get(key)?.delete(member);
  }

  /**
   * XADD key * field value …: the id is `<ms>-<seq>` from the wall clock, always above the last id
   * ever given (deleted entries included), as Redis makes it.
   */
  xadd(key: string, fields: [string, string][]): string {
    this.expire(key);
    let stream = this.streams.get(key);
    if (!stream) {
      stream = { entries: new Map(), lastMs: 0, lastSeq: -1 };
      this.streams.set(key, stream);
    }
    const now = this.wallClockMs();
    if (now > stream.lastMs) {
      stream.lastMs = now;
      stream.lastSeq = 0;
    } else {
      stream.lastSeq += 1;
    }
    const id = `${stream.lastMs}-${stream.lastSeq}`;
    stream.entries.set(id, fields);
    return id;
  }

  /** XRANGE key - <lastMs> COUNT count: the oldest entries, of those whose time is at most lastMs. */
  xrange(key: string, count: number, lastMs = Number.POSITIVE_INFINITY): StreamEntry[] {
    this.expire(key);
    const entries = [...(this.streams.get(key)?.entries ?? [])]
      .filter(([id]) => Number(id.split('-')[0]) <= lastMs)
      .slice(0, count);
    return entries.map(([id, fields]) => ({ id, fields }));
  }

  /** XRANGE key id id: the entry with exactly this id (`<ms>-<seq>`, as Redis compares ids). */
  xget(key: string, id: string): StreamEntry | null {
    this.expire(key);
    const fields = this.streams.get(key)?.entries.get(canonicalStreamId(id));
    return fields === undefined ? null : { id: canonicalStreamId(id), fields };
  }

  /** XDEL key id: 1 if it deleted an entry. The stream (and its last id) stays, even when empty. */
  xdel(key: string, id: string): number {
    this.expire(key);
    return this.streams.get(key)?.entries.delete(canonicalStreamId(id)) ? 1 : 0;
  }

  exists(key: string): boolean {
    this.expire(key);
    return this.strings.has(key) || this.hashes.has(key) || this.zsets.has(key) || this.streams.has(key);
  }

  del(key: string): void {
    this.strings.delete(key);
    this.hashes.delete(key);
    this.zsets.delete(key);
    this.streams.delete(key);
    this.expiresAt.delete(key);
  }

  /** FLUSHALL: every key gone, as after a restart of the embedded engine. */
  flushAll(): void {
    this.strings.clear();
    this.hashes.clear();
    this.zsets.clear();
    this.streams.clear();
    this.expiresAt.clear();
  }

  pexpire(key: string, ms: number): void {
    if (this.exists(key)) this.expiresAt.set(key, this.wallClockMs() + ms);
  }

  pttl(key: string): number {
    if (!this.exists(key)) return -2;
    const at = this.expiresAt.get(key);
    return at === undefined ? -1 : Math.max(0, at - this.wallClockMs());
  }

  /** Drops expired keys; called now and then so an idle key does not live forever. */
  sweep(): void {
    const now = this.wallClockMs();
    for (const [key, at] of this.expiresAt) if (at <= now) this.del(key);
  }

  /** Counts script calls and sweeps every 10,000 of them. */
  tick(): void {
    this.operations += 1;
    if (this.operations % 10_000 === 0) this.sweep();
  }

  private expire(key: string): void {
    const at = this.expiresAt.get(key);
    if (at !== undefined && at <= this.wallClockMs()) this.del(key);
  }
}

/** `<ms>-<seq>` as Redis reads it: "007-01" names entry 7-1 (BigInt: ids reach 2^64 - 1). */
function canonicalStreamId(id: string): string {
  const [ms = '0', seq = '0'] = id.split('-');
  return `${BigInt(ms)}-${BigInt(seq)}`;
}
