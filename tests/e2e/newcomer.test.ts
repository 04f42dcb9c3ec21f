import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GatewayProcess, spawnSpicegate } from '../support/gateway-process.js';
import { freePort } from '../support/redis-server.js';

const run = promisify(execFile);

/** The README's default address; the test's gateway listens on a free port instead. */
const README_ORIGIN = 'http://127.0.0.1:8787';

interface SseEvent {
  type: string;
  content?: string;
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  cost_micro?: string;
  reservation_id?: string;
}

/** The "Try it in a minute" section of README.md: its shell commands and its shown outputs. */
async function readmeSection(): Promise<{ commands: string[]; text: string }> {
  const readme = await readFile('README.md', 'utf8');
  const start = readme.indexOf('## Try it in a minute');
  expect(start, 'README.md has a "Try it in a minute" section').toBeGreaterThanOrEqual(0);
  const end = readme.indexOf('\n## ', start + 1);
  const text = readme.slice(start, end < 0 ? undefined : end);
  const commands: string[] = [];
  for (const match of text.matchAll(/```sh\n([\s\S]*?)```/g)) {
    // One command per logical line: backslash continuations joined, comments and blanks dropped.
    const block = (match[1] ?? '').replace(/\\\n\s*/g, '');
    for (const line of block.split('\n')) {
      const command = line.trim();
      if (command !== '' && !command.startsWith('#')) commands.push(command);
    }
  }
  return { commands, text };
}

/** `-H "Name: value"` / `-H 'Name: value'` and `-d '…'` of a curl command line. */
function parseCurl(command: string, vars: Record<string, string>) {
  const url = /curl(?: -N)? (\S+)/.exec(command)?.[1];
  const body = /-d '([^']*)'/.exec(command)?.[1];
  if (url === undefined || body === undefined) throw new Error(`cannot read curl command: ${command}`);
  const headers: Record<string, string> = {};
  for (const [, double, single] of command.matchAll(/-H (?:"([^"]*)"|'([^']*)')/g)) {
    const header = (double ?? single ?? '').replace(/\$(\w+)/g, (_, name: string) => vars[name] ?? '');
    const colon = header.indexOf(':');
    headers[header.slice(0, colon).trim().toLowerCase()] = header.slice(colon + 1).trim();
  }
  return { url, body, headers, streaming: command.startsWith('curl -N ') };
}

function sseEvents(text: string): SseEvent[] {
  return text
    .split('\n')
    .filter((line) => line.startsWith('data: '))
    .map((line) => JSON.parse(line.slice(6)) as SseEvent);
}

describe('a newcomer runs the README commands against `npm start` on embedded defaults', () => {
  let dataDir: string;
  let gateway: GatewayProcess;
  let origin: string;
  let port: string;
  let startedAt: number;
  let cliEnv: Record<string, string>;
  let tenantId = '';

  beforeAll(async () => {
    startedAt = performance.now();
    dataDir = await mkdtemp(join(tmpdir(), 'sg-newcomer-'));
    port = String(await freePort());
    // `npm start` is `node bin/spicegate.js serve`: the same process, with no configuration.
    gateway = spawnSpicegate(['serve'], { PORT: port, DATA_DIR: dataDir });
    // Not waiting for 'spicegate ready': a newcomer types the next command at once, and the CLI
    // waits out the first start (PGlite's initdb and migrations) by itself.
    origin = String((await gateway.waitForLog('listening')).url);
    // The CLI finds the gateway and the admin token as in the newcomer's shell: from PORT (unset
    // there: 8787) and DATA_DIR (unset there: ./.data). The runner's database, store and admin
    // token must not leak in.
    cliEnv = {
      ...(process.env as Record<string, string>),
      DATABASE_URL: '',
      REDIS_URL: '',
      ADMIN_TOKEN: '',
      HOST: '',
      DATA_DIR: dataDir,
      PORT: port,
    };
  });
  afterAll(async () => {
    gateway.kill();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('npm start is the serve command the test runs', async () => {
    const pkg = JSON.parse(await readFile('package.json', 'utf8')) as { scripts: { start: string } };
    expect(pkg.scripts.start).toBe('node bin/spicegate.js serve');
    const { commands } = await readmeSection();
    expect(commands[0]).toBe('npm start');
  });

  it('creates a tenant, grants credits, makes a key and streams a completion billed exactly', async () => {
    const { commands, text } = await readmeSection();
    const env = cliEnv;
    const vars: Record<string, string> = {};
    const outputs: { command: string; stdout: string }[] = [];
    const responses: { command: string; status: number; contentType: string | null; text: string }[] = [];

    for (const command of commands.slice(1)) {
      const assignment = /^(\w+)=\$\((.*)\)$/.exec(command);
      if (assignment !== null || command.startsWith('npx spicegate ')) {
        // Through bash and npx, exactly as written.
        const shell = assignment?.[2] ?? command;
        const { stdout } = await run('bash', ['-c', shell], { env: { ...env, ...vars } });
        if (assignment?.[1] !== undefined) vars[assignment[1]] = stdout.trim();
        else outputs.push({ command, stdout });
      } else if (command.startsWith('curl ')) {
        const curl = parseCurl(command, vars);
        expect(curl.url.startsWith(`${README_ORIGIN}/`)).toBe(true);
        const response = await fetch(curl.url.replace(README_ORIGIN, origin), {
          method: 'POST',
          headers: curl.headers,
          body: curl.body,
        });
        responses.push({
          command,
          status: response.status,
          contentType: response.headers.get('content-type'),
          text: await response.text(),
        });
      } else {
        throw new Error(`the README shows a command this test does not know how to run: ${command}`);
      }
    }

    expect(vars.TENANT).toMatch(/^ten_[0-9a-f]{32}$/);
    tenantId = vars.TENANT ?? '';
    expect(vars.KEY).toMatch(/^sg_live_[A-Z2-7]{12}_[0-9A-Za-z]{32}$/);

    const grantOutput = outputs.find((o) => o.command.startsWith('npx spicegate credits grant'));
    const granted = JSON.parse(grantOutput?.stdout ?? 'null') as Record<string, string>;
    expect(granted).toMatchObject({
      tenantId: vars.TENANT,
      amountMicro: '5000000',
      availableMicro: '5000000',
    });

    const stream = responses.find((r) => r.command.includes('/api/v1/inference'));
    expect(stream?.status).toBe(200);
    expect(stream?.contentType).toContain('text/event-stream');
    const events = sseEvents(stream?.text ?? '');
    const done = events.at(-1);
    expect(done?.type).toBe('done');
    expect(events.filter((e) => e.type === 'token')).toHaveLength(done?.usage?.completion_tokens ?? -1);
    const costMicro = BigInt(done?.cost_micro ?? '0');
    expect(costMicro).toBeGreaterThan(0n);

    // The done event is written after settlement, so the balance read next is final: it has
    // dropped by exactly cost_micro, nothing reserved.
    const balanceOutput = outputs.find((o) => o.command.startsWith('npx spicegate credits balance'));
    const balance = JSON.parse(balanceOutput?.stdout ?? 'null') as Record<string, string>;
    expect(BigInt(granted.availableMicro ?? '') - BigInt(balance.availableMicro ?? '')).toBe(costMicro);
    expect(balance).toMatchObject({ committedMicro: costMicro.toString(), reservedMicro: '0' });

    const chat = responses.find((r) => r.command.includes('/v1/chat/completions'));
    expect(chat?.status).toBe(200);
    const completion = JSON.parse(chat?.text ?? 'null') as {
      object: string;
      choices: { message: { content: string } }[];
      usage: { completion_tokens: number };
    };
    expect(completion.object).toBe('chat.completion');
    expect(completion.choices[0]?.message.content).not.toBe('');

    // The outputs the README shows are the ones this run produced (ids and times aside).
    const shownDone = /^data: (\{"type":"done".*\})$/m.exec(text)?.[1];
    expect(JSON.parse(shownDone ?? 'null')).toEqual({ ...done, reservation_id: expect.any(String) });
    expect(text).toContain(JSON.stringify(balance, null, 2));
    const shownChat = /^(\{"id":"chatcmpl-.*\})$/m.exec(text)?.[1];
    expect(JSON.parse(shownChat ?? 'null')).toEqual({
      ...completion,
      id: expect.any(String),
      created: expect.any(Number),
    });

    // The README's minute, from a cold start on an empty DATA_DIR: reported, not asserted.
    console.log(`newcomer: the minute took ${Math.round(performance.now() - startedAt)} ms`);
  }, 90_000);

  it('key revoke --id (no --tenant) stops the key', async () => {
    expect(tenantId).not.toBe('');
    const cli = async (args: string) =>
      (await run('bash', ['-c', `npx spicegate ${args}`], { env: cliEnv })).stdout;
    const created = JSON.parse(await cli(`key create --tenant ${tenantId} --name second`)) as {
      id: string;
      key: string;
      prefix: string;
    };
    expect(created.key.startsWith(created.prefix)).toBe(true);
    const infer = async () => {
      const response = await fetch(`${origin}/api/v1/inference`, {
        method: 'POST',
        headers: { authorization: `Bearer ${created.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: 'hi', max_tokens: 1 }),
      });
      await response.text();
      return response;
    };
    expect((await infer()).status).toBe(200);

    const revoked = JSON.parse(await cli(`key revoke --id ${created.id}`)) as {
      id: string;
      revokedAt: string;
    };
    expect(revoked).toMatchObject({ id: created.id, revokedAt: expect.any(String) });
    // Revocation takes effect within 5 s of the call returning (DESIGN.md §6).
    const deadline = Date.now() + 5_000;
    let status = (await infer()).status;
    while (status !== 401 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      status = (await infer()).status;
    }
    expect(status).toBe(401);
  }, 60_000);
});
