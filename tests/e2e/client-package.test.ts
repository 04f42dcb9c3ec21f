import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient } from '../../src/client.js';
import { createHarness, type Harness } from '../support/harness.js';
import { serve } from '../support/serve.js';

const run = promisify(execFile);

const PROJECT = process.cwd();
/** The project's own compiler, standing in for the one a TypeScript tool would have. */
const TSC = join(PROJECT, 'node_modules', 'typescript', 'bin', 'tsc');

/**
 * A tool's compiler settings. skipLibCheck stays on: with it off, drizzle-orm's own declarations
 * (reached through the router's context type) fail, whatever spicegate ships (they import optional
 * peers such as mysql2 and gel); the declarations test below checks what spicegate's import.
 */
const TOOL_TSCONFIG = {
  compilerOptions: {
    strict: true,
    module: 'nodenext',
    moduleResolution: 'nodenext',
    target: 'es2022',
    types: ['node'],
    skipLibCheck: true,
    noEmit: true,
  },
};

const TOOL_MJS = `import { createClient } from 'spicegate/client';

const sg = createClient({ url: process.env.SPICEGATE_URL, token: process.env.SPICEGATE_TOKEN });
const tenant = await sg.admin.tenants.create.mutate({ name: 'Packaged Tool', tier: 3 });
console.log(JSON.stringify(tenant));
`;

const TOOL_TS = `import { type AppRouter, type Client, createClient } from 'spicegate/client';

type IsAny<T> = 0 extends 1 & T ? true : false;
const routerIsTyped: IsAny<AppRouter> = false;

const sg: Client = createClient({ url: 'http://127.0.0.1:8787', token: 'token' });
const tenant = await sg.admin.tenants.create.mutate({ name: 'Acme', tier: 4 });
const id: string = tenant.id;
const tier: number = tenant.tier;
console.log(routerIsTyped, id, tier);
`;

/** The same call with the tier as a string: the router's input says number. */
const WRONG_TOOL_TS = TOOL_TS.replace('tier: 4 }', "tier: 'four' }");

/** The error lines tsc prints for a file (`<file>(line,col): error TS…`). */
function errorsIn(output: string, file: string): string[] {
  return output.split('\n').filter((line) => line.startsWith(`${file}(`));
}

/** Runs the tool's tsc; `--listFiles` also prints every file the program compiled, one a line. */
async function typeCheck(dir: string, config: string): Promise<{ code: number; output: string }> {
  try {
    const { stdout } = await run(process.execPath, [TSC, '-p', config, '--listFiles'], { cwd: dir });
    return { code: 0, output: stdout };
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string };
    return { code: failed.code ?? -1, output: `${failed.stdout ?? ''}${failed.stderr ?? ''}` };
  }
}

async function declarationFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((entry) => entry.isFile() && entry.name.endsWith('.d.ts'))
    .map((entry) => join(entry.parentPath, entry.name));
}

/** Packs the project and installs the tarball into `tool`, a fresh ESM package, as a tool would. */
async function installTool(scratch: string, tool: string): Promise<void> {
  // `npm pack` runs `prepare`, which builds dist/ from the sources as they are now.
  const { stdout } = await run('npm', ['pack', '--pack-destination', scratch, '--json', '--silent'], {
    cwd: PROJECT,
  });
  const [packed] = JSON.parse(stdout.slice(stdout.indexOf('['))) as { filename: string }[];
  if (packed === undefined) throw new Error(`npm pack printed no file: ${stdout}`);
  await mkdir(tool);
  await writeFile(
    join(tool, 'package.json'),
    JSON.stringify({ name: 'tool', private: true, type: 'module' }),
  );
  const nodeTypes = JSON.parse(await readFile('node_modules/@types/node/package.json', 'utf8')) as {
    version: string;
  };
  await run(
    'npm',
    [
      'install',
      join(scratch, packed.filename),
      `@types/node@${nodeTypes.version}`,
      '--prefer-offline',
      // The tool's compiler is TSC; peers (typescript, for tRPC) would add 30 MB to unpack.
      '--omit=peer',
      '--no-audit',
      '--no-fund',
      '--loglevel=error',
    ],
    { cwd: tool },
  );
  await writeFile(join(tool, 'tool.mjs'), TOOL_MJS);
  await writeFile(join(tool, 'tool.ts'), TOOL_TS);
  await writeFile(join(tool, 'wrong.ts'), WRONG_TOOL_TS);
  for (const file of ['tool.ts', 'wrong.ts'])
    await writeFile(
      join(tool, `tsconfig.${file.replace('.ts', '')}.json`),
      JSON.stringify({ ...TOOL_TSCONFIG, files: [file] }),
    );
}

describe('a plain Node tool installs spicegate from `npm pack` and uses spicegate/client', () => {
  let scratch: string;
  let tool: string;
  let harness: Harness;
  let server: { url: string; close(): Promise<void> };

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'sg-client-package-'));
    tool = join(scratch, 'tool');
    const startGateway = async () => {
      harness = await createHarness();
      server = await serve(harness.app);
    };
    await Promise.all([installTool(scratch, tool), startGateway()]);
  }, 180_000);
  afterAll(async () => {
    await server?.close();
    await harness?.close();
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
  });

  it('a .mjs tool imports createClient and creates a tenant on a live gateway', async () => {
    const { stdout } = await run(process.execPath, ['tool.mjs'], {
      cwd: tool,
      env: { PATH: process.env.PATH ?? '', SPICEGATE_URL: server.url, SPICEGATE_TOKEN: harness.adminToken },
    });
    const tenant = JSON.parse(stdout) as { id: string; name: string; tier: number };
    expect(tenant).toMatchObject({ name: 'Packaged Tool', tier: 3 });
    expect(tenant.id).toMatch(/^ten_[0-9a-f]{32}$/);
    const repoClient = createClient({ url: server.url, token: harness.adminToken });
    expect(await repoClient.admin.tenants.get.query({ id: tenant.id })).toEqual(tenant);
  });

  it('a strict nodenext TypeScript tool type-checks a call with the right input, from declarations only', async () => {
    const { code, output } = await typeCheck(tool, 'tsconfig.tool.json');
    const lines = output.trimEnd().split('\n');
    expect(lines.filter((line) => line.includes('error TS'))).toEqual([]);
    expect(code).toBe(0);
    // The tool compiles none of the gateway's sources under its own settings.
    const fromSpicegate = lines.filter((line) => line.includes('/node_modules/spicegate/'));
    expect(fromSpicegate).toContain(join(tool, 'node_modules/spicegate/dist/client.d.ts'));
    expect(fromSpicegate.filter((file) => !file.endsWith('.d.ts'))).toEqual([]);
  });

  it('the same tool with a wrong input type fails to type-check, at that call', async () => {
    const { code, output } = await typeCheck(tool, 'tsconfig.wrong.json');
    expect(code).not.toBe(0);
    const line = WRONG_TOOL_TS.split('\n').findIndex((text) => text.includes("tier: 'four'")) + 1;
    expect(errorsIn(output, 'wrong.ts')).toEqual([
      expect.stringMatching(new RegExp(`^wrong\\.ts\\(${line},\\d+\\): error TS2322: .*'number'`)),
    ]);
  });

  it('its declarations import only emitted .d.ts files and the package dependencies', async () => {
    const installed = join(tool, 'node_modules', 'spicegate');
    const manifest = JSON.parse(await readFile(join(installed, 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
    };
    const dependencies = Object.keys(manifest.dependencies);
    const files = await declarationFiles(join(installed, 'dist'));
    const emitted = new Set(files.map((file) => relative(installed, file)));
    expect(emitted).toContain('dist/client.d.ts');
    const problems: string[] = [];
    for (const file of files) {
      const text = await readFile(file, 'utf8');
      for (const [, specifier = ''] of text.matchAll(/(?:from |import\()['"]([^'"]+)['"]/g)) {
        // Node's own modules come with @types/node, as for any Node package's declarations.
        if (specifier.startsWith('node:')) continue;
        if (specifier.startsWith('.')) {
          const target = relative(installed, join(file, '..', specifier.replace(/\.js$/, '.d.ts')));
          if (!specifier.endsWith('.js') || !emitted.has(target))
            problems.push(`${relative(installed, file)}: ${specifier}`);
        } else {
          const name = specifier
            .split('/')
            .slice(0, specifier.startsWith('@') ? 2 : 1)
            .join('/');
          if (!dependencies.includes(name)) problems.push(`${relative(installed, file)}: ${specifier}`);
        }
      }
    }
    expect(problems).toEqual([]);
  });

  it('the packed spicegate command runs from the install and lists that tenant', async () => {
    const created = await createClient({
      url: server.url,
      token: harness.adminToken,
    }).admin.tenants.create.mutate({ name: 'Listed By CLI', tier: 2 });
    const { stdout } = await run(
      process.execPath,
      [
        'node_modules/spicegate/bin/spicegate.js',
        'tenant',
        'list',
        '--url',
        server.url,
        '--token',
        harness.adminToken,
      ],
      { cwd: tool, env: { PATH: process.env.PATH ?? '', DATA_DIR: join(scratch, 'data') } },
    );
    const tenants = JSON.parse(stdout) as { id: string }[];
    expect(tenants.map((tenant) => tenant.id)).toContain(created.id);
  });
});
