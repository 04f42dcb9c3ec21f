// Builds the typed client for tools that import `spicegate/client` from plain Node: dist/client.js
// (esbuild; @trpc/client stays an import) and dist/client.d.ts over the declarations tsc emits for
// the sources the client's types reach (the AppRouter and what its procedures name).
// `npm ci` and `npm pack` run it as `prepare`. tsc emits without type-checking (tsconfig.client.json:
// noCheck): `npm run typecheck` checks the same sources.
import { execFile } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { build } from 'esbuild';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DIST = join(ROOT, 'dist');

/** tsc is a dev dependency: an install without dev dependencies builds the JavaScript alone. */
function tscPath() {
  try {
    const manifest = createRequire(import.meta.url).resolve('typescript/package.json');
    return join(dirname(manifest), 'bin', 'tsc');
  } catch {
    return undefined;
  }
}

async function declarations() {
  const tsc = tscPath();
  if (tsc === undefined) {
    console.warn('spicegate: typescript is not installed; dist/client.d.ts not built');
    return;
  }
  await promisify(execFile)(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.client.json')], { cwd: ROOT });
  await writeFile(join(DIST, 'client.d.ts'), "export * from './types/src/client.js';\n");
}

await rm(DIST, { recursive: true, force: true });
await Promise.all([
  build({
    absWorkingDir: ROOT,
    entryPoints: ['src/client.ts'],
    outfile: 'dist/client.js',
    bundle: true,
    packages: 'external',
    platform: 'node',
    format: 'esm',
    target: 'node20',
    logLevel: 'error',
  }),
  declarations(),
]);
