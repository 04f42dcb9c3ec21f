// Builds the TypeScript sources into plain ESM, so `npm start` runs without loader hooks: tsx's
// ESM hook keeps a loader thread and its own heap (~35 MiB of RSS, measured with
// `npm run bench:gateway`). npm packages are not bundled but imported from node_modules by
// absolute URL, so the bundle runs from wherever it is written. A start whose inputs are those of
// the last build (sources, tsconfig, resolved packages) reuses that bundle without loading
// esbuild (~0.3 s saved; docs/performance.md "Boot").
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

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

/**
 * npm packages stay external, resolved now as Node would from the project (ESM conditions); what
 * each resolved to goes into `resolved`, for the inputs record.
 */
function packagesByUrl(resolved) {
  return {
    name: 'packages-by-url',
    setup(builder) {
      builder.onResolve({ filter: /^[^./]/ }, (args) => {
        if (args.path.startsWith('node:')) return { path: args.path, external: true };
        const url = import.meta.resolve(args.path);
        resolved[args.path] = url;
        return { path: url, external: true };
      });
    },
  };
}

/** Read by esbuild besides the sources it lists: they change how it compiles. */
const CONFIG_INPUTS = ['tsconfig.json', 'package.json'];

/**
 * Bundles `entry` (relative to the project root) and returns the URL of the built module: in
 * `.build/<content hash>/` under the project, or under the OS temp directory when the project is
 * read-only. Named by content, so processes starting at once agree on it and none overwrites a
 * bundle another is loading. Dynamic imports stay lazy (code splitting): a database driver still
 * loads only when it is used.
 */
export async function bundle(entry) {
  const reused = await lastBuild(entry);
  if (reused !== undefined) return reused;
  const { build } = await import('esbuild');
  const resolved = {};
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
    metafile: true,
    plugins: [sourceUrls, packagesByUrl(resolved)],
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
      const inputs = [...Object.keys(result.metafile.inputs), ...CONFIG_INPUTS];
      const record = { bundle: name, entryFile, inputs: hashFiles(inputs), resolved };
      // Best effort: without a record the next start builds again.
      await recordInputs(out, entry, record).catch(() => undefined);
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

/** What a build of `entry` read: the record is named by the entry, kept beside its bundles. */
function recordPath(out, entry) {
  return join(out, `${entry.replaceAll('/', '_')}.inputs.json`);
}

/**
 * The builder: this file and esbuild's version (sources compile differently with another), and
 * where the project is (the bundle holds its absolute URLs).
 */
async function builderKey() {
  const esbuildManifest = createRequire(import.meta.url).resolve('esbuild/package.json');
  const hash = createHash('sha256').update(ROOT);
  for (const path of [fileURLToPath(import.meta.url), esbuildManifest]) hash.update(await readFile(path));
  return hash.digest('hex');
}

/**
 * A file that is not there (an installed package has no tsconfig.json) hashes as `absent`. Read
 * synchronously: nothing else runs yet at start, and ~175 small reads through libuv's pool took
 * 3x as long (20 against 7 ms).
 */
function hashFiles(paths) {
  return Object.fromEntries(
    paths.map((path) => {
      try {
        const text = readFileSync(join(ROOT, path));
        return [path, createHash('sha256').update(text).digest('hex')];
      } catch {
        return [path, 'absent'];
      }
    }),
  );
}

async function recordInputs(out, entry, record) {
  const path = recordPath(out, entry);
  const staging = `${path}.${process.pid}`;
  await writeFile(staging, JSON.stringify({ ...record, builder: await builderKey() }));
  await rename(staging, path);
}

/**
 * The bundle of the last build of `entry` when nothing it read has changed since: every source
 * file (by content), the package each import resolves to, and the builder. Otherwise undefined
 * (a missing or unreadable record or file included), and the caller builds.
 */
async function lastBuild(entry) {
  for (const out of [join(ROOT, '.build'), join(tmpdir(), 'spicegate-build')]) {
    try {
      const record = JSON.parse(await readFile(recordPath(out, entry), 'utf8'));
      if (record.builder !== (await builderKey())) continue;
      const hashes = hashFiles(Object.keys(record.inputs));
      if (Object.entries(record.inputs).some(([path, hash]) => hashes[path] !== hash)) continue;
      if (Object.entries(record.resolved).some(([name, url]) => import.meta.resolve(name) !== url)) continue;
      const dir = join(out, record.bundle);
      if (!(await exists(join(dir, record.entryFile)))) continue;
      const now = new Date();
      await utimes(dir, now, now).catch(() => undefined);
      return pathToFileURL(join(dir, record.entryFile)).href;
    } catch {
      // no usable record here
    }
  }
  return undefined;
}

/** Bundles and staging directories only (named by a 16-digit hash, or staging-*). */
const BUILT = /^([0-9a-f]{16}|staging-.*)$/;

/** Best effort: a bundle another user owns, or one removed meanwhile, is left alone. */
async function removeStale(out, current) {
  try {
    const now = Date.now();
    for (const name of await readdir(out)) {
      if (name === current || !BUILT.test(name)) continue;
      const path = join(out, name);
      const info = await stat(path).catch(() => undefined);
      if (info !== undefined && now - info.mtimeMs > STALE_MS)
        await rm(path, { recursive: true, force: true }).catch(() => undefined);
    }
  } catch {
    // nothing to clean
  }
}
