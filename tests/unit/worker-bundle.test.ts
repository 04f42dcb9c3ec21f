import { describe, expect, it } from 'vitest';
import { buildWorkerBundle, inputOwner } from '../support/worker-bundle.js';

describe('the Workers bundle (wrangler deploy --dry-run, offline)', () => {
  it('builds from wrangler.toml and leaves the Node-only drivers and weight out', async () => {
    const bundle = await buildWorkerBundle();
    const inputs = Object.keys(bundle.inputs);
    const owners = new Set(inputs.map(inputOwner));
    expect(owners).toContain('hono');
    expect(owners).toContain('postgres');
    expect(owners).toContain('@upstash/redis');
    // Node-only drivers and helpers, and what prom-client dragged in.
    for (const nodeOnly of [
      '@electric-sql/pglite',
      'ioredis',
      'tsx',
      '@hono/node-server',
      'prom-client',
      '@opentelemetry/api',
      // The limiters are in-process on Workers: the shared windows' library stays with Node.
      '@upstash/ratelimit',
    ]) {
      expect(owners, nodeOnly).not.toContain(nodeOnly);
    }
    // The migrator (the Worker never migrates) and Node built-ins with no use on Workers.
    expect(inputs.filter((path) => /drizzle-orm\/(.*\/)?migrator\.js$/.test(path))).toEqual([]);
    expect(inputs.filter((path) => /(^|[:/])(cluster|v8|fs|zlib)(\.mjs)?$/.test(path))).toEqual([]);
    expect(bundle.code).not.toContain('migrations-folder');
  });
});
