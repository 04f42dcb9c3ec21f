import { describe, expect, it } from 'vitest';
import { MAX_AMOUNT_MICRO, MAX_BALANCE_MICRO, MAX_COUNT } from '../../src/budget/bounds.js';
import { parseConfig } from '../../src/config.js';
import {
  estimate,
  largestEstimateTokens,
  MAX_COMPLETION_TOKENS,
  MAX_MESSAGES,
} from '../../src/inference/estimate.js';
import { LIVE_DEFAULT_RPM, SANDBOX_LIMITS } from '../../src/keys/keys.js';
import { DEFAULT_PRICES } from '../../src/pricing/pricing.js';
import { SCRIPTS, type ScriptName } from '../../src/store/scripts.generated.js';
import { MAX_TIER_RATE } from '../../src/tenants/tiers.js';

/** The value of `local NAME = <integer>` in the version of a Lua script the engines call. */
function luaConstant(script: ScriptName, name: string): bigint {
  const match = new RegExp(`^local ${name} = (\\d+)$`, 'm').exec(SCRIPTS[script].source);
  if (match?.[1] === undefined) throw new Error(`${script} v${SCRIPTS[script].version} has no ${name}`);
  return BigInt(match[1]);
}

describe('the engine bounds in src/budget/bounds.ts', () => {
  it('are the numbers the Lua scripts check', () => {
    expect(luaConstant('admit', 'MAX_COUNT')).toBe(BigInt(MAX_COUNT));
    expect(luaConstant('admit', 'MAX_AMOUNT')).toBe(MAX_AMOUNT_MICRO);
    expect(luaConstant('budget_event', 'MAX_AMOUNT')).toBe(MAX_AMOUNT_MICRO);
    expect(luaConstant('budget_finalize', 'MAX_AMOUNT')).toBe(MAX_AMOUNT_MICRO);
    expect(luaConstant('budget_finalize', 'MAX_COUNT')).toBe(BigInt(MAX_COUNT));
    expect(luaConstant('credit', 'MAX_AMOUNT')).toBe(MAX_AMOUNT_MICRO);
    expect(luaConstant('credit', 'MAX_BALANCE')).toBe(MAX_BALANCE_MICRO);
    expect(luaConstant('debit', 'MAX_AMOUNT')).toBe(MAX_AMOUNT_MICRO);
    expect(luaConstant('hydrate', 'MAX_AMOUNT')).toBe(MAX_AMOUNT_MICRO);
    expect(luaConstant('hydrate', 'MAX_BALANCE')).toBe(MAX_BALANCE_MICRO);
    expect(luaConstant('rebase', 'MAX_AMOUNT')).toBe(MAX_AMOUNT_MICRO);
    expect(luaConstant('rebase', 'MAX_BALANCE')).toBe(MAX_BALANCE_MICRO);
  });

  it('keep every figure an exact integer in a double', () => {
    expect(BigInt(MAX_COUNT) * 60_000n).toBeLessThan(2n ** 53n);
    expect(MAX_AMOUNT_MICRO).toBeLessThan(MAX_BALANCE_MICRO);
    expect(MAX_BALANCE_MICRO).toBeLessThan(2n ** 53n);
  });

  it('hold every built-in and configurable rate', () => {
    for (const rate of [MAX_TIER_RATE, LIVE_DEFAULT_RPM, SANDBOX_LIMITS.rpmLimit, SANDBOX_LIMITS.tpdLimit]) {
      expect(rate).toBeLessThanOrEqual(MAX_COUNT);
    }
  });
});

describe('configuration the engine would refuse fails start-up', () => {
  const rate = (value: number) =>
    JSON.stringify({ 9: { tenantRpm: value, userRpm: value, channelRpm: value, burstCapacity: value } });

  it('TIERS rates up to MAX_TIER_RATE are accepted; one past names TIERS', () => {
    expect(parseConfig({ TIERS: rate(MAX_TIER_RATE) }).ok).toBe(true);
    expect(parseConfig({ TIERS: rate(MAX_TIER_RATE + 1) })).toMatchObject({ ok: false, variable: 'TIERS' });
  });

  it('POOL_PRICES at which the largest request reserves 10^15 µ is accepted; one µ dearer names POOL_PRICES', () => {
    const MAX_BODY_BYTES = 64 * 1024 * 1024;
    const highest = 10n ** 18n / BigInt(largestEstimateTokens(MAX_BODY_BYTES));
    const env = (price: bigint) => ({
      MAX_BODY_BYTES: String(MAX_BODY_BYTES),
      POOL_PRICES: `flagship=${price}`,
    });
    expect(parseConfig(env(highest)).ok).toBe(true);
    expect(parseConfig(env(highest + 1n))).toMatchObject({ ok: false, variable: 'POOL_PRICES' });
  });

  it('counts at least the reservation of any request a body of that size can carry (exactly, for ASCII)', () => {
    for (const bytes of [1024, 1_048_576]) {
      for (const char of ['x', 'é', '字', '😀']) {
        // A prompt of at most `bytes` UTF-8 bytes in as many messages as a request may carry.
        const prompt = char.repeat(Math.floor(bytes / Buffer.byteLength(char)));
        const { maxPromptTokens, maxTokens } = estimate(
          'cheap',
          prompt,
          MAX_COMPLETION_TOKENS,
          DEFAULT_PRICES,
          MAX_MESSAGES,
        );
        const reserved = maxPromptTokens + maxTokens;
        if (char === 'x') expect(reserved).toBe(largestEstimateTokens(bytes));
        else expect(reserved).toBeLessThanOrEqual(largestEstimateTokens(bytes));
      }
    }
  });
});
