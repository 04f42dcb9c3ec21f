import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openUpstream, prepare, relay } from '../../src/inference/run.js';
import { createKey } from '../../src/keys/keys.js';
import { costMicro } from '../../src/pricing/pricing.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';

/**
 * A client that stops reading blocks the relay's writes. The relay gives up on it at the upstream
 * timeout plus a grace period and settles, so the reservation never outlives its TTL while money is
 * still being spent. (The deadline is shortened here through the upstream timeout.)
 */
let harness: Harness;

beforeAll(async () => {
  harness = await createHarness({ config: { localModelTokens: 8, localModelDelayMs: 5 } });
});
afterAll(() => harness.close());

/** A tier-4 tenant with 1 credit and a verified key. */
async function fundedKey(name: string) {
  const tenant = await createTenant(harness.services, { name, tier: 4 });
  await harness.services.store.credit({ tenantId: tenant.id, grantId: 'g', amountMicro: 1_000_000n });
  const key = await harness.services.keys.verify(
    (await createKey(harness.services, tenant.id, { name: 'k' })).key,
  );
  if (key === undefined) throw new Error('the new key did not verify');
  return { tenant, key };
}

describe('relay', () => {
  it('settles what was delivered when the client stops reading past the deadline', async () => {
    const { tenant, key } = await fundedKey('Stalled');

    // Deadline = upstreamTimeoutMs + 30 s grace: 200 ms here.
    const services = {
      ...harness.services,
      config: { ...harness.services.config, upstreamTimeoutMs: -29_800 },
    };
    const input = { prompt: 'abcd', maxTokens: 8, pool: 'standard' };
    const prepared = await prepare(services, key, input);
    if (!prepared.ok) throw prepared.error;
    const signal = new AbortController().signal;
    const opened = await openUpstream(services, key, input, prepared, signal);
    if (!opened.ok) throw opened.error;

    let written = 0;
    const startedAt = performance.now();
    const outcome = await relay(services, key, prepared, opened.upstream, {
      signal,
      // The first write goes through; the second never completes, as to a client that stopped reading.
      onTokens: () => (++written === 1 ? Promise.resolve() : new Promise<void>(() => undefined)),
    });
    expect(outcome.kind).toBe('stalled');
    expect(performance.now() - startedAt).toBeLessThan(5_000);
    const snapshot = await harness.services.store.snapshot(tenant.id);
    expect(snapshot.reservedMicro).toBe(0n);
    // "abcd": 1 prompt token; 2 tokens handed to the client (the second write never finished).
    expect(snapshot.committedMicro).toBe(costMicro('standard', 1 + 2));
  });

  it('relays up to max_tokens from one burst that runs far past it, then cuts the stream', async () => {
    const { key } = await fundedKey('Burst');
    const input = { prompt: 'abcd', maxTokens: 10, pool: 'standard' };
    const prepared = await prepare(harness.services, key, input);
    if (!prepared.ok) throw prepared.error;
    // An upstream that ignores max_tokens and sends 30 tokens in one chunk, then more.
    const burst = Array.from({ length: 30 }, (_, i) => `t${i}`);
    let readAfterBurst = false;
    const upstream = {
      tokens: (async function* () {
        yield burst;
        readAfterBurst = true;
        yield ['late'];
      })(),
      usage: () => undefined,
    };
    const relayed: string[] = [];
    const outcome = await relay(harness.services, key, prepared, upstream, {
      signal: new AbortController().signal,
      onTokens: (contents) => {
        relayed.push(...contents);
        return undefined;
      },
    });
    expect(relayed).toEqual(burst.slice(0, 10));
    expect(readAfterBurst).toBe(false);
    expect(outcome).toMatchObject({ kind: 'done', usage: { promptTokens: 1, completionTokens: 10 } });
  });
});
