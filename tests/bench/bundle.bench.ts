/**
 * npm run bench:bundle — the Workers bundle as `wrangler deploy` would upload it: raw and gzipped
 * size (Cloudflare's limits count the gzipped one; our goal is ≤ 200 KiB) and the largest packages
 * in it. Prints the figures; asserts nothing (tests/unit/worker-bundle.test.ts checks its content).
 */
import { buildWorkerBundle, inputOwner } from '../support/worker-bundle.js';

const bundle = await buildWorkerBundle();
const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;
console.log(`worker.js: ${kib(bundle.rawBytes)} raw, ${kib(bundle.gzipBytes)} gzipped`);
const byOwner = new Map<string, number>();
for (const [path, { bytesInOutput }] of Object.entries(bundle.inputs)) {
  const owner = inputOwner(path);
  byOwner.set(owner, (byOwner.get(owner) ?? 0) + bytesInOutput);
}
console.log('largest parts (minified, before gzip):');
for (const [owner, bytes] of [...byOwner].sort((a, b) => b[1] - a[1]).slice(0, 15)) {
  console.log(`  ${owner.padEnd(28)} ${kib(bytes).padStart(10)}`);
}
