import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { admit } from '../../src/inference/admit.js';
import { estimateRequest } from '../../src/inference/estimate.js';
import { openUpstream } from '../../src/inference/open-upstream.js';
import { relay } from '../../src/inference/relay.js';
import type { InferenceInput } from '../../src/inference/request.js';
import { settle } from '../../src/inference/settle.js';
import { createKey } from '../../src/keys/keys.js';
import type { VerifiedKey } from '../../src/keys/verifier.js';
import { costMicro } from '../../src/pricing/pricing.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';

/**
 * A client that stops reading blocks the relay's writes. The relay gives up on it at the upstream
 * timeout plus its grace (`relayGraceMs`) and the request is settled, so the reservation never
 * outlives its TTL while money is still being spent.
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

/** Stages 1–2: estimated and admitted. */
async function admitted(services: typeof harness.services, key: VerifiedKey, input: InferenceInput) {
  const estimated = estimateRequest(services.config, key, input);
  if (!estimated.ok) throw estimated.error;
  const admission = await admit(services, key, input, estimated);
  if (!admission.ok) throw admission.error;
  return admission;
}

describe('relay', () => {
  it('gives up on a client that stops reading at the upstream timeout plus the relay grace, and settles what was delivered', async () => {
    const { tenant, key } = await fundedKey('Stalled');
    const services = {
      ...harness.services,
      config: { ...harness.services.config, upstreamTimeoutMs: 100, relayGraceMs: 100 },
    };
    const input = { prompt: 'abcd', maxTokens: 8, pool: 'standard' };
    const admission = await admitted(services, key, input);
    const signal = new AbortController().signal;
    const call = await openUpstream(services, key, input, admission, signal);
    if (!call.ok) throw call.error;

    let written = 0;
    const relayed = await relay(services, admission, call.upstream, {
      signal,
      // The first write goes through; the second never completes, as to a client that stopped reading.
      onTokens: () => (++written === 1 ? Promise.resolve() : new Promise<void>(() => undefined)),
    });
    expect(relayed).toEqual({ delivered: 2, report: undefined, end: 'stalled' });
    expect(await settle(services, key, admission, relayed)).toEqual({
      kind: 'stalled',
      usage: { promptTokens: 1, completionTokens: 2 },
    });
    const snapshot = await harness.services.store.snapshot(tenant.id);
    expect(snapshot.reservedMicro).toBe(0n);
    // "abcd": 1 prompt token; 2 tokens handed to the client (the second write never finished).
    expect(snapshot.committedMicro).toBe(costMicro('standard', 1 + 2));
  });

  it('counts that deadline from admission: time spent before the first byte is not given again', async () => {
    const { key } = await fundedKey('Late start');
    const config = { ...harness.services.config, upstreamTimeoutMs: 60_000, relayGraceMs: 100 };
    const input = { prompt: 'abcd', maxTokens: 8, pool: 'standard' };
    const admission = await admitted({ ...harness.services, config }, key, input);
    const signal = new AbortController().signal;
    const call = await openUpstream({ ...harness.services, config }, key, input, admission, signal);
    if (!call.ok) throw call.error;
    // The relay starts as if the upstream had taken the whole timeout to answer: 100 ms remain.
    const later = { ...harness.services, config, clock: { now: () => admission.admittedAtMs + 60_000 } };
    let written = 0;
    const relayed = await relay(later, admission, call.upstream, {
      signal,
      onTokens: () => (++written === 1 ? Promise.resolve() : new Promise<void>(() => undefined)),
    });
    expect(relayed.end).toBe('stalled');
    await settle(harness.services, key, admission, relayed);
  });

  it('relays up to max_tokens from one burst that runs far past it, then cuts the stream', async () => {
    const { key } = await fundedKey('Burst');
    const input = { prompt: 'abcd', maxTokens: 10, pool: 'standard' };
    const admission = await admitted(harness.services, key, input);
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
    const result = await relay(harness.services, admission, upstream, {
      signal: new AbortController().signal,
      onTokens: (contents) => {
        relayed.push(...contents);
        return undefined;
      },
    });
    expect(relayed).toEqual(burst.slice(0, 10));
    expect(readAfterBurst).toBe(false);
    expect(await settle(harness.services, key, admission, result)).toMatchObject({
      kind: 'done',
      usage: { promptTokens: 1, completionTokens: 10 },
    });
  });
});
