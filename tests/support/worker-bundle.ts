import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';

const run = promisify(execFile);

export interface WorkerBundle {
  code: string;
  rawBytes: number;
  gzipBytes: number;
  /** esbuild's metafile inputs: every file the bundle holds, with the bytes it contributes. */
  inputs: Record<string, { bytesInOutput: number }>;
}

/**
 * The Worker exactly as `wrangler deploy` would upload it (`--dry-run`, offline): wrangler's own
 * esbuild settings, nodejs_compat polyfills and the `minify` of wrangler.toml.
 */
export async function buildWorkerBundle(): Promise<WorkerBundle> {
  const out = await mkdtemp(join(tmpdir(), 'sg-worker-'));
  try {
    await run(
      'node_modules/.bin/wrangler',
      ['deploy', '--dry-run', '--outdir', out, '--metafile', join(out, 'meta.json')],
      { timeout: 120_000, env: { ...process.env, WRANGLER_SEND_METRICS: 'false', CI: 'true' } },
    );
    const code = await readFile(join(out, 'worker.js'), 'utf8');
    const meta = JSON.parse(await readFile(join(out, 'meta.json'), 'utf8')) as {
      outputs: Record<string, { entryPoint?: string; inputs: WorkerBundle['inputs'] }>;
    };
    const output = Object.values(meta.outputs).find((candidate) => candidate.entryPoint !== undefined);
    if (output === undefined) throw new Error('the metafile names no entry point');
    return {
      code,
      rawBytes: Buffer.byteLength(code),
      gzipBytes: gzipSync(code).byteLength,
      inputs: output.inputs,
    };
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}

/** The package a bundled input comes from (`@scope/name`, `name`), or its source folder. */
export function inputOwner(path: string): string {
  const inPackage = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path);
  if (inPackage?.[1] !== undefined) return inPackage[1];
  return path.split('/').slice(0, 2).join('/');
}
