import { randomBytes } from 'node:crypto';
import { expect, inject } from 'vitest';
import type { SettledSpend } from '../../src/ledger/outbox.js';
import { createLogger, type Logger } from '../../src/observability/logger.js';
import type { Metrics } from '../../src/observability/metrics.js';
import type { AdmitInput, AdmitLimits, OutboxAckEntry, SpendUsage } from '../../src/store/contracts.js';
import { memoryRunner } from '../../src/store/memory/index.js';
import { redisRunner } from '../../src/store/redis.js';
import { createStore, type Store } from '../../src/store/typed-store.js';
import { deleteKeysWithPrefix } from './redis-cleanup.js';

/** Both engines with the same contract: the Lua scripts on the real Redis, and the memory engine. */
export interface EngineUnderTest {
  name: 'redis' | 'memory';
  store: Store;
  runner: ReturnType<typeof redisRunner> | ReturnType<typeof memoryRunner>;
  /** Writes a raw string value (for planting corrupt data). */
  setRaw(key: string, value: string): Promise<void>;
  /** Writes one raw hash field (for planting accounting drift). */
  setHashRaw(key: string, field: string, value: string): Promise<void>;
  /** Reads one raw hash field (null when absent). */
  getHashRaw(key: string, field: string): Promise<string | null>;
  /** Deletes a key, as an eviction would. */
  deleteRaw(key: string): Promise<void>;
  /** A key's time to live in ms (-1: none, -2: no such key). */
  ttlRaw(key: string): Promise<number>;
  /** Sets a key's time to live in ms. */
  expireRaw(key: string, ms: number): Promise<void>;
  close(): Promise<void>;
}

export function filePrefix(): string {
  return `sgtest:${randomBytes(6).toString('hex')}:`;
}

export function makeEngine(
  name: 'redis' | 'memory',
  options: { log?: Logger; keyPrefix?: string; metrics?: Metrics } = {},
): EngineUnderTest {
  const log = options.log ?? createLogger({ level: 'silent' });
  const storeOptions = options.metrics === undefined ? { log } : { log, metrics: options.metrics };
  if (name === 'memory') {
    const runner = memoryRunner();
    return {
      name,
      runner,
      store: createStore(runner, storeOptions),
      setRaw: async (key, value) => {
        runner.kv.set(key, value);
      },
      setHashRaw: async (key, field, value) => {
        runner.kv.hset(key, { [field]: value });
      },
      getHashRaw: async (key, field) => runner.kv.hget(key, field),
      deleteRaw: async (key) => runner.kv.del(key),
      ttlRaw: async (key) => runner.kv.pttl(key),
      expireRaw: async (key, ms) => runner.kv.pexpire(key, ms),
      close: async () => {},
    };
  }
  const url = inject('redisUrl');
  const keyPrefix = options.keyPrefix ?? filePrefix();
  const runner = redisRunner({ url, log, keyPrefix });
  return {
    name,
    runner,
    store: createStore(runner, storeOptions),
    setRaw: async (key, value) => {
      await runner.client.set(key, value);
    },
    setHashRaw: async (key, field, value) => {
      await runner.client.hset(key, field, value);
    },
    getHashRaw: (key, field) => runner.client.hget(key, field),
    deleteRaw: async (key) => {
      await runner.client.del(key);
    },
    ttlRaw: (key) => runner.client.pttl(key),
    expireRaw: async (key, ms) => {
      await runner.client.pexpire(key, ms);
    },
    close: async () => {
      await runner.close();
      await deleteKeysWithPrefix(url, keyPrefix);
    },
  };
}

export const NO_LIMITS: AdmitLimits = {
  tenantRpm: null,
  userRpm: null,
  channelRpm: null,
  keyRpm: null,
  burstCapacity: null,
  burstRefillPerMinute: 0,
  keyTpd: null,
  tenantMonthlyCapMicro: null,
  keyMonthlyCapMicro: null,
};

let sequence = 0;
/** A tenant id no other test uses. */
export function uniqueTenant(): string {
  sequence += 1;
  return `ten_${randomBytes(4).toString('hex')}${sequence}`;
}

/** A tenant id no other test uses, its store balance started at 0 as tenant creation does. */
export async function newTenant(store: Store): Promise<string> {
  const tenantId = uniqueTenant();
  await startBalance(store, tenantId);
  return tenantId;
}

/** Starts a tenant's store balance at 0, as tenant creation does (createTenant). */
export async function startBalance(store: Store, tenantId: string): Promise<void> {
  await store.hydrate({ tenantId, creditedMicro: 0n, committedMicro: 0n, grants: [] });
}

/** An outbox entry id as a settlement answers it: a stream id, `<ms>-<seq>`. */
export const ENTRY_ID = expect.stringMatching(/^\d+-\d+$/);

/** 2026-11-15T12:00:00.000Z: mid-month, mid-window. */
export const NOW = Date.UTC(2026, 10, 15, 12, 0, 0);

export function admitInput(tenantId: string, overrides: Partial<AdmitInput> = {}): AdmitInput {
  sequence += 1;
  return {
    tenantId,
    keyId: 'key_a',
    pool: 'standard',
    reservationId: `res_${randomBytes(6).toString('hex')}${sequence}`,
    costMicro: 100n,
    tokenEstimate: 10,
    nowMs: NOW,
    ttlMs: 300_000,
    limits: NO_LIMITS,
    ...overrides,
  };
}

/** A settlement's spend usage for finalize: `tokens` completion tokens on key_a (admitInput's key), paid. */
export function spendUsage(tokens: number, overrides: Partial<SpendUsage> = {}): SpendUsage {
  return { keyId: 'key_a', promptTokens: 0, completionTokens: tokens, free: false, ...overrides };
}

/**
 * Admits and settles one request on `store`, as the request path does (finalize appends its spend
 * row to the tenant's outbox): reserves `reservedMicro` (0 for a free request) and settles
 * `actualCostMicro`. Answers the reservation id.
 */
export async function settleOne(store: Store, tenantId: string, options: SettleOptions): Promise<string> {
  return (await settleOneHeld(store, tenantId, options)).row.reservationId;
}

interface SettleOptions {
  reservedMicro?: bigint;
  actualCostMicro: bigint;
  spend?: Partial<SpendUsage>;
  nowMs?: number;
  /** Outbox entries the finalize acknowledges (as the request path passes the recorder's). */
  ack?: OutboxAckEntry[];
}

/**
 * settleOne, answering what the request path hands the spend recorder
 * (`services.spend.settled(row, outboxEntryId)`): the settled row and its outbox entry.
 */
export async function settleOneHeld(
  store: Store,
  tenantId: string,
  options: SettleOptions,
): Promise<{ row: SettledSpend; outboxEntryId: string | null }> {
  const nowMs = options.nowMs ?? Date.now();
  const admitted = await store.admit(
    admitInput(tenantId, { costMicro: options.reservedMicro ?? 1_000n, nowMs }),
  );
  if (admitted.status !== 'ADMITTED') throw new Error(`expected ADMITTED, got ${admitted.status}`);
  const usage = spendUsage(2, options.spend);
  const settled = await store.finalize({
    tenantId,
    reservationId: admitted.reservationId,
    actualCostMicro: options.actualCostMicro,
    nowMs,
    spend: usage,
    ...(options.ack === undefined ? {} : { ack: options.ack }),
  });
  if (settled.status !== 'FINALIZED') throw new Error(`expected FINALIZED, got ${settled.status}`);
  return {
    row: {
      reservationId: admitted.reservationId,
      tenantId,
      keyId: usage.keyId,
      pool: 'standard',
      promptTokens: usage.promptTokens,
      completionTokens: usage.completionTokens,
      costMicro: usage.free ? options.actualCostMicro : settled.chargedMicro,
      chargedMicro: settled.chargedMicro,
      free: usage.free,
      settledAt: new Date(nowMs),
    },
    outboxEntryId: settled.outboxEntryId,
  };
}
