/**
 * Target BR of bench:gateway: B (proxy-node.ts) plus the two store calls every enforced request
 * makes — `admit` before forwarding, `budget_finalize` once the answer is in — through the same
 * store, scripts and ioredis client as spicegate, and nothing else (no key, no Hono, no body
 * parsing, no book). It is the floor of a Node gateway that decides each request in Redis in two
 * round trips: what the CPU goal leaves for everything else is G's budget minus this.
 * UPSTREAM_URL is the upstream's origin, REDIS_URL a Redis of its own; prints `{"port":n}` once
 * listening with BR_TENANTS tenants (default 200) credited.
 */
import { createServer } from 'node:http';
import { newId } from '../../../src/ids.js';
import { createLogger } from '../../../src/observability/logger.js';
import { redisRunner } from '../../../src/store/redis.js';
import { createStore } from '../../../src/store/typed-store.js';
import { TIER_LIMITS } from '../settings.js';
import { forward, listen } from './proxy-common.js';

const log = createLogger({ level: 'warn' });
const store = createStore(redisRunner({ url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', log }), {
  log,
});

// No monthly caps, as G's keys.
const LIMITS = { ...TIER_LIMITS, tenantMonthlyCapMicro: null, keyMonthlyCapMicro: null };
const tenants = Array.from({ length: Number(process.env.BR_TENANTS ?? 200) }, () => ({
  tenantId: newId('ten'),
  keyId: newId('key'),
}));
for (const { tenantId } of tenants) {
  await store.hydrate({ tenantId, creditedMicro: 0n, committedMicro: 0n, grants: [] });
  await store.credit({ tenantId, grantId: newId('grant'), amountMicro: 10n ** 15n });
}

let next = 0;
const server = createServer(async (req, res) => {
  const tenant = tenants[next++ % tenants.length] as (typeof tenants)[number];
  const reservationId = newId('res');
  const admitted = await store.admit({
    ...tenant,
    // A fresh user per request, as bench:gateway's requests to G.
    userId: `u${next}`,
    pool: 'bench',
    reservationId,
    costMicro: 10_000n,
    tokenEstimate: 64,
    nowMs: Date.now(),
    ttlMs: 300_000,
    limits: LIMITS,
  });
  if (admitted.status !== 'ADMITTED') {
    res.writeHead(429).end();
    return;
  }
  forward(req, res, (answer) => {
    // The answer is held until the charge is settled, as a gateway that bills on delivery does.
    const chunks: Buffer[] = [];
    answer.on('data', (chunk: Buffer) => chunks.push(chunk));
    answer.on('end', async () => {
      await store.finalize({
        tenantId: tenant.tenantId,
        reservationId,
        actualCostMicro: 9_000n,
        nowMs: Date.now(),
        spend: { keyId: tenant.keyId, promptTokens: 8, completionTokens: 16, free: false },
      });
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      res.end(Buffer.concat(chunks));
    });
  });
});
listen(server);
