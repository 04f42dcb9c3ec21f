/** GC_THREADS's values: `auto` (the default), `single`, `parallel`. */
export const GC_THREADS: readonly string[];
export const SINGLE_THREADED_GC: '--single-threaded-gc';
export interface CpuQuota {
  quotaUs: number;
  periodUs: number;
}
export function effectiveCpus(affinity: number, quota: CpuQuota | undefined): number;
export function parseCpuQuota(files: { cpuMax?: string; cfsQuota?: string; cfsPeriod?: string }): CpuQuota | undefined;
export function singleThreadedGc(setting: string | undefined, cpus: number): boolean;
export function cpusHere(): number;
