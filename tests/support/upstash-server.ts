import { spawn } from 'node:child_process';
import { freePort } from './redis-server.js';

export interface UpstashServer {
  url: string;
  token: string;
  stop(): Promise<void>;
}

// In a process of its own: the package's Redis client has no close and would retry forever.
const SERVER = `
import { serve } from '@hono/node-server';
import { createApp } from '@humanwhocodes/upstash-redis-server';
const app = createApp({ token: process.env.URS_TOKEN, redisUrl: process.env.URS_REDIS_URL });
serve({ fetch: app.fetch, port: Number(process.env.URS_PORT), hostname: '127.0.0.1' });
`;

/**
 * An Upstash-compatible REST server (@humanwhocodes/upstash-redis-server, its `createApp` bound to
 * a free loopback port) in front of the Redis at `redisUrl`: what a Worker reaches as
 * UPSTASH_REDIS_REST_URL in tests and in development.
 */
export async function startUpstashServer(redisUrl: string): Promise<UpstashServer> {
  const token = `urs-${crypto.randomUUID()}`;
  const port = await freePort();
  const child = spawn(process.execPath, ['--input-type=module', '-e', SERVER], {
    env: { ...process.env, URS_TOKEN: token, URS_REDIS_URL: redisUrl, URS_PORT: String(port) },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let errors = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    errors += chunk.toString();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGKILL');
    await exited;
  };
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const reply = await fetch(url, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}` },
        body: '["PING"]',
      });
      if (reply.status === 200) return { url, token, stop };
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`the Upstash-compatible server did not start: ${errors}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
