/**
 * npm run bench:keys — API key verifications per second and latency, on the embedded parts
 * (PGlite in memory, the memory store): a cache hit (a known key, verified again and again: parse,
 * HMAC, constant-time compare) and a cache miss (a new unknown prefix each time: a database
 * lookup and a dummy HMAC). Prints figures; asserts nothing.
 */
import { randomBytes } from 'node:crypto';
import { openPglite } from '../../db/pglite.js';
import { parseConfig } from '../../src/config.js';
import { createKey } from '../../src/keys/keys.js';
import { type Peppers, parsePeppers } from '../../src/keys/peppers.js';
import { createLogger } from '../../src/observability/logger.js';
import { assembleServices } from '../../src/services.js';
import { localSigner } from '../../src/signing/signer.js';
import { memoryStore } from '../../src/store/index.js';
import { createTenant } from '../../src/tenants/tenants.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);

const parsed = parseConfig({});
if (!parsed.ok) throw new Error(parsed.message);
const log = createLogger({ level: 'silent' });
const database = await openPglite();
await database.migrate();
const services = assembleServices({
  config: parsed.config,
  database,
  store: memoryStore({ log }),
  signer: await localSigner(),
  peppers: parsePeppers(`1:${randomBytes(32).toString('base64url')}`) as Peppers,
  log,
  lifecycle: { owns: { database: true } },
});
await services.start();
const tenant = await createTenant(services, { name: 'bench', tier: 4 });
const { key } = await createKey(services, tenant.id, { name: 'bench' });

async function measure(name: string, next: () => string, expectValid: boolean): Promise<string> {
  const latencies: number[] = [];
  const until = performance.now() + SECONDS * 1000;
  while (performance.now() < until) {
    const presented = next();
    const startedAt = performance.now();
    const result = await services.keys.verify(presented);
    latencies.push(performance.now() - startedAt);
    if ((result !== undefined) !== expectValid) throw new Error(`${name}: unexpected verification result`);
  }
  latencies.sort((a, b) => a - b);
  const at = (q: number) =>
    (latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0).toFixed(3);
  const perSecond = Math.round(latencies.length / SECONDS);
  return `${name.padEnd(10)} ${String(perSecond).padStart(9)} ${at(0.5).padStart(8)} ${at(0.99).padStart(8)} ${String(latencies.length).padStart(9)}`;
}

const secret = key.split('_').at(-1) as string;
let counter = 0;
const unknown = () => {
  counter += 1;
  const prefix = counter.toString(32).toUpperCase().replace(/[01]/g, 'A').padStart(12, 'B').slice(-12);
  return `sg_live_${prefix.replace(/[^A-Z2-7]/g, 'C')}_${secret}`;
};

console.log(`API key verification, ${SECONDS} s per case (PGlite in memory, memory store, one process)`);
console.log('case         verif/s   p50 ms   p99 ms     count');
console.log(await measure('cache hit', () => key, true));
console.log(await measure('cache miss', unknown, false));
await services.stop();
