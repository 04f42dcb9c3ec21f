// How `spicegate serve` runs V8's garbage collector (GC_THREADS). On one CPU, V8's helper threads
// (parallel scavenge, concurrent marking and sweeping) only take turns with the main thread on
// that CPU: pinned to one core, the gateway measured 25 % less CPU per stream and half the p99
// at 500 req/s with `--single-threaded-gc` (docs/performance.md, issue 18). The flag must be given
// when Node starts (setting it later crashes V8's marker) and NODE_OPTIONS may not carry it, so
// bin/spicegate.js starts the server again with it. Plain JS: it runs before anything is bundled.
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

export const GC_THREADS = ['auto', 'single', 'parallel'];
export const SINGLE_THREADED_GC = '--single-threaded-gc';

/**
 * The CPUs this process may use: its affinity, bounded by a cgroup CPU quota (v2 `cpu.max`, v1
 * `cpu.cfs_quota_us`/`cpu.cfs_period_us`; a container's `--cpus`), rounded up.
 */
export function effectiveCpus(affinity, quota) {
  if (quota === undefined) return affinity;
  return Math.max(1, Math.min(affinity, Math.ceil(quota.quotaUs / quota.periodUs)));
}

/** The cgroup CPU quota from the files' texts (v2 first); undefined for none or unreadable. */
export function parseCpuQuota(files) {
  const v2 = files.cpuMax?.trim().split(/\s+/);
  if (v2 !== undefined && v2.length === 2 && v2[0] !== 'max') {
    const [quotaUs, periodUs] = v2.map(Number);
    if (quotaUs > 0 && periodUs > 0) return { quotaUs, periodUs };
  }
  const quotaUs = Number(files.cfsQuota?.trim());
  const periodUs = Number(files.cfsPeriod?.trim());
  if (quotaUs > 0 && periodUs > 0) return { quotaUs, periodUs };
  return undefined;
}

/**
 * Whether the server should run with `--single-threaded-gc`: `single` always, `parallel` never,
 * `auto` (the default) when it may use one CPU only. Throws on any other value.
 */
export function singleThreadedGc(setting, cpus) {
  const value = setting === undefined || setting === '' ? 'auto' : setting;
  if (!GC_THREADS.includes(value)) {
    throw new Error(`GC_THREADS must be one of ${GC_THREADS.join(', ')} (got ${JSON.stringify(value.slice(0, 40))})`);
  }
  return value === 'single' || (value === 'auto' && cpus <= 1);
}

/** This machine's (or container's) effective CPU count, for `singleThreadedGc`. */
export function cpusHere() {
  const read = (path) => {
    try {
      return readFileSync(path, 'utf8');
    } catch {
      return undefined;
    }
  };
  const quota = parseCpuQuota({
    cpuMax: read('/sys/fs/cgroup/cpu.max'),
    cfsQuota: read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us'),
    cfsPeriod: read('/sys/fs/cgroup/cpu/cpu.cfs_period_us'),
  });
  return effectiveCpus(availableParallelism(), quota);
}
