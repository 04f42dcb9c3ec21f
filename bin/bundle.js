// Builds the TypeScript sources into plain ESM once per start, so `npm start` runs without loader
// hooks: tsx's ESM hook keeps a loader thread and its own heap (~35 MiB of RSS, measured with
// `npm run bench:gateway`). esbuild takes ~0.2 s; npm packages are not bundled but imported from
// node_modules by absolute URL, so the bundle runs from wherever it is written.
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
// Bundles not started from for this long are removed (by the next start that builds another).
const STALE_MS = 7 * 24 * 60 * 60 * 1000;

/**
 * `import.meta.url` keeps meaning the source file's own URL (db/migrations-folder.ts resolves the
 * migrations next to it; node.ts compares it with argv[1]), wherever the bundle is written.
 */
const sourceUrls = {
  name: 'source-import-meta-url',
  setup(builder) {
    builder.onLoad({ filter: /\.ts$/ }, async (args) => {
      const text = await readFile(args.path, 'utf8');
      if (!text.includes('import.meta.url')) return undefined;
      const url = JSON.stringify(pathToFileURL(args.path).href);
      return { contents: text.replaceAll('import.meta.url', url), loader: 'ts' };
    });
  },
};

/** npm packages stay external, resolved now as Node would from the project (ESM conditions). */
const packagesByUrl = {
  name: 'packages-by-url',
  setup(builder) {
    builder.onResolve({ filter: /^[^./]/ }, (args) => {
      if (args.path.startsWith('node:')) return { path: args.path, external: true };
      return { path: import.meta.resolve(args.path), external: true };
    });
  },
};

/**
 * Bundles `entry` (relative to the project root) and returns the URL of the built module: in
 * `.build/<content hash>/` under the project, or under the OS temp directory when the project is
 * read-only. Named by content, so processes starting at once agree on it and none overwrites a
 * bundle another is loading. Dynamic imports stay lazy (code splitting): a database driver still
 * loads only when it is used.
 */
export async function bundle(entry) {
  const result = await build({
    absWorkingDir: ROOT,
    entryPoints: [entry],
    bundle: true,
    splitting: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    sourcemap: 'linked',
    outdir: '/staging',
    write: false,
    logLevel: 'error',
    plugins: [sourceUrls, packagesByUrl],
  });
  const hash = createHash('sha256');
  for (const file of result.outputFiles) hash.update(file.path).update(file.contents);
  const name = hash.digest('hex').slice(0, 16);
  const entryFile = entry.replace(/^.*\//, '').replace(/\.ts$/, '.js');
  let lastError;
  for (const out of [join(ROOT, '.build'), join(tmpdir(), 'spicegate-build')]) {
    try {
      const dir = join(out, name);
      if (!(await exists(join(dir, entryFile)))) await publish(out, dir, result.outputFiles);
      // Marks the bundle as in use, for the clean-up of stale ones.
      const now = new Date();
      await utimes(dir, now, now).catch(() => undefined);
      void removeStale(out, name);
      return pathToFileURL(join(dir, entryFile)).href;
    } catch (error) {
      lastError = error;
    }
  }
  throw new Error(`spicegate: cannot write its bundle (${lastError?.message ?? lastError})`);
}

/** Writes the files into a fresh staging directory, then renames it into place in one step. */
async function publish(out, dir, files) {
  await mkdir(out, { recursive: true });
  const staging = await mkdtemp(join(out, 'staging-'));
  for (const file of files) {
    const target = join(staging, relative('/staging', file.path));
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, file.contents);
  }
  // Another process may have published the same bundle meanwhile: theirs is identical.
  await rename(staging, dir).catch(() => rm(staging, { recursive: true, force: true }));
}

async function exists(path) {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Best effort: a bundle another user owns, or one removed meanwhile, is left alone. */
async function removeStale(out, current) {
  try {
    const now = Date.now();
    for (const name of await readdir(out)) {
      if (name === current) continue;
      const path = join(out, name);
      const info = await stat(path).catch(() => undefined);
      if (info !== undefined && now - info.mtimeMs > STALE_MS)
        await rm(path, { recursive: true, force: true }).catch(() => undefined);
    }
  } catch {
    // nothing to clean
  }
}
