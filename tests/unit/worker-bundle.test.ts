import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);

describe('the Workers bundle (wrangler deploy --dry-run, offline)', () => {
  it('builds from wrangler.toml and leaves the Node-only drivers out', async () => {
    const out = await mkdtemp(join(tmpdir(), 'sg-worker-'));
    try {
      await run('node_modules/.bin/wrangler', ['deploy', '--dry-run', '--outdir', out], {
        timeout: 120_000,
        env: { ...process.env, WRANGLER_SEND_METRICS: 'false', CI: 'true' },
      });
      const bundle = await readFile(join(out, 'worker.js'), 'utf8');
      const modules = new Set(
        [...bundle.matchAll(/^\/\/ node_modules\/((?:@[^/]+\/)?[^/]+)/gm)].map((m) => m[1]),
      );
      expect(modules).toContain('hono');
      expect(modules).toContain('postgres');
      expect(modules).toContain('@upstash/redis');
      expect(modules).not.toContain('@electric-sql/pglite');
      expect(modules).not.toContain('ioredis');
      expect(modules).not.toContain('tsx');
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });
});
