import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Reads the `--cpu-prof` output of the gateway and sums self time per function and per module over
 * one time window only (the saturation run), so boot, migrations and the other phases do not
 * show. V8 stamps samples with the monotonic clock in µs — the clock of `process.hrtime` — so the
 * bench's own hrtime readings select the window.
 */

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface CpuProfile {
  nodes: { id: number; callFrame: CallFrame; children?: number[] }[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  samples: number;
  windowMs: number;
  functions: { name: string; share: number }[];
  modules: { name: string; share: number }[];
}

/** A module-ish label: the npm package, `src/<dir>/<file>`, or node's internals. */
function moduleOf(url: string, functionName: string): string {
  if (url === '') return functionName.startsWith('(') ? functionName : '(native)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1] as string;
  if (url.startsWith('node:')) return url.replace(/^node:internal\/([^/]+).*/, 'node:internal/$1');
  const own = /\/(src|db|routers)\/(.+)$/.exec(url);
  if (own) return `${own[1]}/${own[2]}`;
  return url.replace(/^file:\/\//, '');
}

export async function summarizeProfile(
  dir: string,
  windowUs: [number, number],
  top: number,
): Promise<ProfileSummary | undefined> {
  const files = (await readdir(dir).catch(() => [])).filter((file) => file.endsWith('.cpuprofile'));
  if (files.length === 0) return undefined;
  const profile = JSON.parse(await readFile(join(dir, files[0] as string), 'utf8')) as CpuProfile;
  const nodes = new Map(profile.nodes.map((node) => [node.id, node.callFrame]));
  const parents = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parents.set(child, node.id);
  // Native frames (writev, HMAC, JSON.parse…) are charged to the nearest JavaScript caller, so the
  // module that asked for the work is the one that shows.
  const callerOf = (id: number): CallFrame | undefined => {
    for (let at = parents.get(id); at !== undefined; at = parents.get(at)) {
      const frame = nodes.get(at);
      if (frame !== undefined && frame.url !== '') return frame;
    }
    return undefined;
  };
  // The first frame outside Node's own modules: the package or source file that started the work.
  const ownerOf = (id: number): CallFrame | undefined => {
    for (let at = parents.get(id); at !== undefined; at = parents.get(at)) {
      const frame = nodes.get(at);
      if (frame !== undefined && frame.url !== '' && !frame.url.startsWith('node:')) return frame;
    }
    return undefined;
  };
  const label = (frame: CallFrame) =>
    `${frame.functionName || '(anonymous)'} ${moduleOf(frame.url, frame.functionName)}${frame.url === '' ? '' : `:${frame.lineNumber + 1}`}`;
  const byFunction = new Map<string, number>();
  const byModule = new Map<string, number>();
  let at = profile.startTime;
  let counted = 0;
  for (let i = 0; i < profile.samples.length; i += 1) {
    at += profile.timeDeltas[i] ?? 0;
    if (at < windowUs[0] || at > windowUs[1]) continue;
    const id = profile.samples[i] as number;
    const frame = nodes.get(id);
    if (frame === undefined) continue;
    counted += 1;
    const native = frame.url === '' && !frame.functionName.startsWith('(');
    const caller = native ? callerOf(id) : undefined;
    const module = moduleOf((caller ?? frame).url, (caller ?? frame).functionName);
    const owner = native || frame.url.startsWith('node:') ? ownerOf(id) : undefined;
    const name =
      (caller === undefined ? label(frame) : `${frame.functionName} ← ${label(caller)}`) +
      (owner === undefined || owner === caller ? '' : ` ← … ${label(owner)}`);
    byFunction.set(name, (byFunction.get(name) ?? 0) + 1);
    byModule.set(module, (byModule.get(module) ?? 0) + 1);
  }
  const ranked = (map: Map<string, number>) =>
    [...map]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, count]) => ({ name, share: count / Math.max(1, counted) }));
  return {
    samples: counted,
    windowMs: (windowUs[1] - windowUs[0]) / 1000,
    functions: ranked(byFunction),
    modules: ranked(byModule),
  };
}

/** The monotonic clock V8's profiler stamps samples with, in µs. */
export const monotonicUs = (): number => Number(process.hrtime.bigint() / 1000n);
