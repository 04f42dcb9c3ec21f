import { describe, expect, it } from 'vitest';
import { effectiveCpus, parseCpuQuota, singleThreadedGc } from '../../bin/gc-threads.js';

describe('GC_THREADS (bin/gc-threads.js)', () => {
  it('auto runs the collector single-threaded on one CPU only; single and parallel are fixed', () => {
    expect(singleThreadedGc(undefined, 1)).toBe(true);
    expect(singleThreadedGc('', 1)).toBe(true);
    expect(singleThreadedGc('auto', 1)).toBe(true);
    expect(singleThreadedGc('auto', 2)).toBe(false);
    expect(singleThreadedGc(undefined, 8)).toBe(false);
    expect(singleThreadedGc('single', 8)).toBe(true);
    expect(singleThreadedGc('parallel', 1)).toBe(false);
  });

  it('refuses any other value, naming the setting and its choices', () => {
    expect(() => singleThreadedGc('one', 1)).toThrow(
      'GC_THREADS must be one of auto, single, parallel (got "one")',
    );
    expect(() => singleThreadedGc('Single', 1)).toThrow(/GC_THREADS/);
  });

  it('reads a cgroup v2 quota, else v1, else none', () => {
    expect(parseCpuQuota({ cpuMax: '100000 100000\n' })).toEqual({ quotaUs: 100_000, periodUs: 100_000 });
    expect(parseCpuQuota({ cpuMax: 'max 100000\n' })).toBeUndefined();
    // v2 without a quota leaves v1 unread only when v1 has none either.
    expect(parseCpuQuota({ cpuMax: 'max 100000\n', cfsQuota: '-1\n', cfsPeriod: '100000\n' })).toBeUndefined();
    expect(parseCpuQuota({ cfsQuota: '50000\n', cfsPeriod: '100000\n' })).toEqual({
      quotaUs: 50_000,
      periodUs: 100_000,
    });
    expect(parseCpuQuota({ cpuMax: 'garbage', cfsQuota: 'x', cfsPeriod: '' })).toBeUndefined();
    expect(parseCpuQuota({})).toBeUndefined();
  });

  it('counts the CPUs of the affinity, bounded by the quota, rounded up', () => {
    expect(effectiveCpus(4, undefined)).toBe(4);
    expect(effectiveCpus(4, { quotaUs: 100_000, periodUs: 100_000 })).toBe(1);
    // Half a CPU is still one; one and a half, two.
    expect(effectiveCpus(4, { quotaUs: 50_000, periodUs: 100_000 })).toBe(1);
    expect(effectiveCpus(4, { quotaUs: 150_000, periodUs: 100_000 })).toBe(2);
    // A quota above the affinity does not add CPUs.
    expect(effectiveCpus(1, { quotaUs: 400_000, periodUs: 100_000 })).toBe(1);
  });
});
