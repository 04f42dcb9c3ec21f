// Makes the first `npm start` after `npm install` fast (docs/performance.md "Boot"): builds the
// migrated PGlite template a new DATA_DIR is copied from (db/pglite-template.ts; initdb is
// seconds of WASM work) and the start bundle. `npm ci` runs it as `prepare`; a failure only costs
// that speed, so it warns and exits 0.
import { bundle } from '../bin/bundle.js';

const startedAt = performance.now();
try {
  await bundle('src/entry/cli.ts');
  const { buildTemplate } = await import(await bundle('db/pglite-template.ts'));
  await buildTemplate();
  console.log(
    `spicegate: start bundle and PGlite template ready (${Math.round(performance.now() - startedAt)} ms)`,
  );
} catch (error) {
  console.warn(
    `spicegate: could not prepare the first start (${error?.message ?? error}); it will be slower`,
  );
}
