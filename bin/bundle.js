// Builds the TypeScript sources into plain ESM once per start, so `npm start` runs without loader
// hooks: tsx's ESM hook keeps a loader thread and its own heap (~30 MiB of RSS, measured with
// `npm run bench:gateway`). esbuild takes ~0.15 s; npm packages stay external (node_modules).
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const OUT = join(ROOT, '.build');
// Bundles of older sources are removed once they are this old (a process may still run one).
const STALE_MS = 24 * 60 * 60 * 1000;

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

/**
 * Bundles `entry` (relative to the project root) and returns the URL of the built module. The
 * output directory is named by a hash of its content, so processes starting at once (tests spawn
 * several) agree on it, and one never overwrites a bundle another is loading. Dynamic imports
 * stay lazy (code splitting): a database driver still loads only when it is used.
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
    packages: 'external',
    sourcemap: 'linked',
    outdir: join(OUT, 'staging'),
    write: false,
    logLevel: 'error',
    plugins: [sourceUrls],
  });
  const hash = createHash('sha256');
  for (const file of result.outputFiles) hash.update(file.path).update(file.contents);
  const name = hash.digest('hex').slice(0, 16);
  const dir = join(OUT, name);
  const entryName = entry.replace(/^.*\//, '').replace(/\.ts$/, '.js');
  const built = join(dir, entryName);
  if (!(await exists(built))) {
    const staging = join(OUT, `${name}.${process.pid}.tmp`);
    for (const file of result.outputFiles) {
      const target = join(staging, relative(join(OUT, 'staging'), file.path));
      await mkdir(dirname(target), { recursive: true });
      await writeFile(target, file.contents);
    }
    // Another process may have published the same bundle meanwhile: theirs is identical.
    await rename(staging, dir).catch(() => rm(staging, { recursive: true, force: true }));
  }
  void removeStale(name);
  return pathToFileURL(built).href;
}

async function exists(path) {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function removeStale(current) {
  const now = Date.now();
  for (const name of await readdir(OUT).catch(() => [])) {
    if (name === current) continue;
    const path = join(OUT, name);
    const info = await stat(path).catch(() => undefined);
    if (info !== undefined && now - info.mtimeMs > STALE_MS) await rm(path, { recursive: true, force: true });
  }
}
