import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
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
 * V8 recompiles a WASM function with its optimising compiler once it has run this much code
 * (default 1.8 M). PostgreSQL's start-up alone crossed that for enough functions to keep background
 * threads compiling for ~0.4 s of CPU in the first second, competing with the start on 2 cores;
 * 100x leaves the start in baseline code, and the hot paths of a running gateway still tier up.
 */
const WASM_TIERING_BUDGET = 180_000_000;

/** Sets the budget above for WASM modules compiled from now on (V8 reads it at compile time). */
export function tierUpLater(): void {
  setFlagsFromString(`--wasm-tiering-budget=${WASM_TIERING_BUDGET}`);
}

/**
 * Reads PGlite's WASM and file system image and compiles the WASM, without loading PGlite itself:
 * started before the server's modules load, the reads and the compile run while they do
 * (docs/performance.md "Boot"). Pass the promise to `createDb` / `openPglite`.
 */
export async function loadPgliteAssets(): Promise<PgliteAssets> {
  // From this source file (bin/bundle.js keeps import.meta.url), wherever the bundle runs.
  const dist = dirname(createRequire(import.meta.url).resolve('@electric-sql/pglite'));
  tierUpLater();
  const [pgliteWasmModule, fsBundle] = await Promise.all([
    readFile(join(dist, 'pglite.wasm')).then((bytes) => WebAssembly.compile(bytes)),
    readFile(join(dist, 'pglite.data')).then((bytes) => new Blob([bytes])),
  ]);
  return { pgliteWasmModule, fsBundle };
}
