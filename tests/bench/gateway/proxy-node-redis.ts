/**
 * Target BR of bench:gateway: B (proxy-node.ts) plus the two store calls every enforced request
 * makes — `admit` before forwarding, `budget_finalize` once the answer is in — through the same
 * store, scripts and ioredis client as spicegate, and nothing else (no key, no Hono, no body
 * parsing, no book). It is the floor of a Node gateway that decides each request in Redis in two
 * round trips: what the CPU goal leaves for everything else is G's budget minus this.
 * UPSTREAM_URL is the upstream's origin, REDIS_URL a Redis of its own; prints `{"port":n}` once
 * listening with BR_TENANTS tenants (default 200) credited.
 */
import { Agent, createServer, request } from 'node:http';
import { newId } from '../../../src/ids.js';
import { createLogger } from '../../../src/observability/logger.js';
import type { AdmitLimits } from '../../../src/store/contracts.js';
import { redisRunner } from '../../../src/store/redis.js';
import { createStore } from '../../../src/store/typed-store.js';

const upstream = new URL(process.env.UPSTREAM_URL ?? 'http://127.0.0.1:1');
const agent = new Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY, maxFreeSockets: 1_024 });
const log = createLogger({ level: 'warn' });
const store = createStore(redisRunner({ url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', log }), {
  log,
});

// As a tier sets them (every dimension evaluated), too high to deny; no monthly caps, as G's keys.
const LIMITS: AdmitLimits = {
  tenantRpm: 1_000_000_000,
  userRpm: 1_000_000_000,
  channelRpm: 1_000_000_000,
  keyRpm: 1_000_000_000,
  burstCapacity: 1_000_000,
  burstRefillPerMinute: 60_000_000,
  keyTpd: 1_000_000_000,
  tenantMonthlyCapMicro: null,
  keyMonthlyCapMicro: null,
};
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
  const headers = { ...req.headers, host: upstream.host };
  const out = request(
    { agent, host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers },
    (answer) => {
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
    },
  );
  out.on('error', () => {
    if (!res.headersSent) res.writeHead(502);
    res.end();
  });
  res.on('close', () => {
    if (!res.writableFinished) out.destroy();
  });
  req.pipe(out);
});
server.keepAliveTimeout = 60_000;
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  const address = server.address();
  if (typeof address === 'object' && address) console.log(JSON.stringify({ port: address.port }));
});
