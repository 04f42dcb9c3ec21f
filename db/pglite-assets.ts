import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { PGliteOptions } from '@electric-sql/pglite';

type WasmModule = NonNullable<PGliteOptions['pgliteWasmModule']>;
/** A global of Node that this project's lib (ES2023, no DOM) leaves untyped. */
declare const WebAssembly: { compile(bytes: Uint8Array): Promise<WasmModule> };

/** What PGlite otherwise reads and compiles itself inside `PGlite.create`. */
export interface PgliteAssets {
  /** PostgreSQL compiled to WASM (9 MB), compiled by V8 off the main thread. */
  readonly pgliteWasmModule: WasmModule;
  /** The file system image PostgreSQL starts from (share/, timezones; 6 MB). */
  readonly fsBundle: Blob;
}

/**
 * Reads PGlite's WASM and file system image and compiles the WASM, without loading PGlite itself:
 * started before the server's modules load, the reads and the compile run while they do
 * (docs/performance.md "Boot"). Pass the promise to `createDb` / `openPglite`.
 */
export async function loadPgliteAssets(): Promise<PgliteAssets> {
  // From this source file (bin/bundle.js keeps import.meta.url), wherever the bundle runs.
  const dist = dirname(createRequire(import.meta.url).resolve('@electric-sql/pglite'));
  const [pgliteWasmModule, fsBundle] = await Promise.all([
    readFile(join(dist, 'pglite.wasm')).then((bytes) => WebAssembly.compile(bytes)),
    readFile(join(dist, 'pglite.data')).then((bytes) => new Blob([bytes])),
  ]);
  return { pgliteWasmModule, fsBundle };
}
