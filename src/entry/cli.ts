import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import { parseArgs } from 'node:util';
import { loadPgliteAssets } from '../../db/pglite-assets.js';
import { type Config, isEmbedded } from '../config.js';
import { FLAGS, isFlag } from '../flags/feature-flags.js';
import { isPool, POOLS } from '../pricing/pricing.js';
import { loadConfigOrExit } from './env.js';
import { adminTokenPath, readSecret } from './secrets.js';

const USAGE = `usage: spicegate <command> [options]

  serve                                   run the gateway (same as npm start)
  worker                                  run the background jobs alone, no HTTP server
                                          (needs DATABASE_URL and REDIS_URL; see JOBS)
  migrate                                 apply database migrations and exit
  tenant create --name NAME --tier 1-9    create a tenant
  tenant list                             list tenants
  credits grant --tenant ID --amount MICRO [--reason TEXT] [--grant-id ID]
                                          grant credits (micro-credits; 1 USD = 1000000);
                                          the same --grant-id again changes nothing
  credits balance [--tenant ID]           credited, committed, reserved, available
  key create --tenant ID --name NAME [--sandbox]
                                          create an API key (the key is shown this once)
  key list [--tenant ID]                  list a tenant's API keys (an admin names the tenant)
  key revoke --id KEY_ID                  revoke an API key
  key rotate --id KEY_ID [--grace SECONDS]
                                          a new key with the same settings; the old one is
                                          revoked now or after the grace period
  pack list                               the credit packs on sale (price, micro-credits)
  invoice create [--tenant ID] --pack NAME
                                          open a crypto invoice for a pack; prints the
                                          payment id and the invoice URL to pay at
  payments [--tenant ID]                  a tenant's payments, newest first
  usage --tenant ID [--from DATE] [--to DATE]
                                          spend and requests per day, pool, key and user,
                                          and the projected depletion (dates ISO 8601;
                                          default the last 30 UTC days)
  token --role admin|operator|member [--tenant ID] [--ttl SECONDS]
                                          issue a tRPC bearer token (prints it)
  signing-key rotate                      start a signing key rotation
  signing-key list                        list signing keys and their states
  pricing get                             prices per pool (micro-credits per 1000 tokens),
                                          their defaults, and per-tenant overrides
  pricing set --pool POOL (--price MICRO | --clear) [--tenant ID]
                                          set a pool's price, globally or for one tenant;
                                          --clear falls back (tenant → global → default)
  flags get                               the feature flags, globally and per tenant
  flags set --flag payments|inference|keys (--enabled true|false | --clear) [--tenant ID]
                                          switch a feature, globally or for one tenant
  audit export --tenant ID [--from T] [--to T]
                                          a tenant's audit trail as JSON lines on stdout
                                          (--tenant platform: signing-key rotations)
  audit verify --tenant ID                check a tenant's audit chain; exit 1 when broken

Commands that change data call a running gateway through the typed client:
  --url URL      the gateway (default http://HOST:PORT from the environment)
  --token TOKEN  a bearer token (default ADMIN_TOKEN, then <DATA_DIR>/admin.token)
  --field NAME   print only this field of the answer, as plain text (e.g. --field id)`;

class UsageError extends Error {}

async function run(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      url: { type: 'string' },
      token: { type: 'string' },
      name: { type: 'string' },
      tier: { type: 'string' },
      role: { type: 'string' },
      tenant: { type: 'string' },
      ttl: { type: 'string' },
      amount: { type: 'string' },
      reason: { type: 'string' },
      'grant-id': { type: 'string' },
      sandbox: { type: 'boolean' },
      id: { type: 'string' },
      grace: { type: 'string' },
      pack: { type: 'string' },
      from: { type: 'string' },
      to: { type: 'string' },
      pool: { type: 'string' },
      price: { type: 'string' },
      flag: { type: 'string' },
      enabled: { type: 'string' },
      clear: { type: 'boolean' },
      field: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [command, subcommand] = positionals;
  const print = printer(values.field);
  if (values.help || command === undefined || command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return command === undefined && !values.help ? 2 : 0;
  }

  const config = loadConfigOrExit(process.env);
  switch (command) {
    case 'serve': {
      // The server's modules load on demand (a command through the client needs none of them).
      // On embedded defaults PGlite's WASM is read and compiled meanwhile (docs/performance.md "Boot").
      const pglite = config.databaseUrl === undefined ? loadPgliteAssets() : undefined;
      pglite?.catch(() => {}); // a failure surfaces where the database opens
      const { main: serve } = await import('./node.js');
      await serve(process.env, pglite === undefined ? {} : { pglite });
      return -1; // keeps running; the signal handler exits
    }
    case 'worker': {
      const { main: worker } = await import('./node-worker.js');
      await worker(process.env);
      return -1; // keeps running; the signal handler exits
    }
    case 'migrate':
      return migrate(config);
    case 'tenant': {
      const client = await clientFor(config, values);
      if (subcommand === 'create') {
        const tier = Number(values.tier);
        if (values.name === undefined || !Number.isInteger(tier))
          throw new UsageError('tenant create needs --name and --tier');
        print(await client.admin.tenants.create.mutate({ name: values.name, tier }));
        return 0;
      }
      if (subcommand === 'list') {
        print(await client.admin.tenants.list.query());
        return 0;
      }
      throw new UsageError(`unknown tenant command: ${subcommand ?? '(none)'}`);
    }
    case 'credits': {
      if (subcommand === 'balance') {
        const client = await clientFor(config, values);
        print(
          await client.billing.balance.query(values.tenant === undefined ? {} : { tenantId: values.tenant }),
        );
        return 0;
      }
      if (subcommand !== 'grant') throw new UsageError(`unknown credits command: ${subcommand ?? '(none)'}`);
      if (values.tenant === undefined || values.amount === undefined)
        throw new UsageError('credits grant needs --tenant and --amount');
      const client = await clientFor(config, values);
      print(
        await client.admin.credits.grant.mutate({
          tenantId: values.tenant,
          amountMicro: values.amount,
          reason: values.reason ?? 'granted with spicegate credits grant',
          ...(values['grant-id'] === undefined ? {} : { grantId: values['grant-id'] }),
        }),
      );
      return 0;
    }
    case 'key': {
      const client = await clientFor(config, values);
      if (subcommand === 'create') {
        if (values.name === undefined)
          throw new UsageError('key create needs --name (and --tenant for an admin)');
        const created = await client.keys.create.mutate({
          name: values.name,
          ...(values.tenant === undefined ? {} : { tenantId: values.tenant }),
          ...(values.sandbox === true ? { sandbox: true } : {}),
        });
        print(created);
        // On stderr, so `--field key` and JSON parsers see only the answer.
        process.stderr.write('spicegate: this is the only time the key is shown; store it now\n');
        return 0;
      }
      if (subcommand === 'list') {
        print(await client.keys.list.query(values.tenant === undefined ? {} : { tenantId: values.tenant }));
        return 0;
      }
      // Key ids are global: the gateway finds the key's tenant (--tenant, if given, must own it).
      const byId = { ...(values.tenant === undefined ? {} : { tenantId: values.tenant }) };
      if (subcommand === 'revoke') {
        if (values.id === undefined) throw new UsageError('key revoke needs --id');
        print(await client.keys.revoke.mutate({ ...byId, id: values.id }));
        return 0;
      }
      if (subcommand === 'rotate') {
        if (values.id === undefined) throw new UsageError('key rotate needs --id');
        const graceSeconds = values.grace === undefined ? undefined : Number(values.grace);
        if (graceSeconds !== undefined && !Number.isInteger(graceSeconds))
          throw new UsageError('--grace must be whole seconds');
        const rotated = await client.keys.rotate.mutate({
          ...byId,
          id: values.id,
          ...(graceSeconds === undefined ? {} : { graceSeconds }),
        });
        print(rotated);
        process.stderr.write('spicegate: this is the only time the new key is shown; store it now\n');
        return 0;
      }
      throw new UsageError(`unknown key command: ${subcommand ?? '(none)'}`);
    }
    case 'pack': {
      if (subcommand !== 'list') throw new UsageError(`unknown pack command: ${subcommand ?? '(none)'}`);
      const client = await clientFor(config, values);
      print(await client.billing.packs.query());
      return 0;
    }
    case 'invoice': {
      if (subcommand !== 'create') throw new UsageError(`unknown invoice command: ${subcommand ?? '(none)'}`);
      if (values.pack === undefined)
        throw new UsageError('invoice create needs --pack (and --tenant for an admin)');
      const client = await clientFor(config, values);
      print(
        await client.billing.createInvoice.mutate({
          pack: values.pack,
          ...(values.tenant === undefined ? {} : { tenantId: values.tenant }),
        }),
      );
      return 0;
    }
    case 'payments': {
      if (subcommand !== undefined) throw new UsageError(`payments takes no subcommand: ${subcommand}`);
      const client = await clientFor(config, values);
      print(
        await client.billing.payments.query(values.tenant === undefined ? {} : { tenantId: values.tenant }),
      );
      return 0;
    }
    case 'usage': {
      if (subcommand !== undefined) throw new UsageError(`usage takes no subcommand: ${subcommand}`);
      if (values.tenant === undefined) throw new UsageError('usage needs --tenant');
      const client = await clientFor(config, values);
      print(
        await client.admin.usage.query({
          tenantId: values.tenant,
          ...(values.from === undefined ? {} : { from: values.from }),
          ...(values.to === undefined ? {} : { to: values.to }),
        }),
      );
      return 0;
    }
    case 'token': {
      const role = values.role;
      if (role !== 'admin' && role !== 'operator' && role !== 'member') {
        throw new UsageError('token needs --role admin, operator or member');
      }
      const ttlSeconds = values.ttl === undefined ? undefined : Number(values.ttl);
      if (ttlSeconds !== undefined && !Number.isInteger(ttlSeconds))
        throw new UsageError('--ttl must be whole seconds');
      const client = await clientFor(config, values);
      const issued = await client.admin.tokens.issue.mutate({
        role,
        ...(values.tenant === undefined ? {} : { tenantId: values.tenant }),
        ...(ttlSeconds === undefined ? {} : { ttlSeconds }),
      });
      process.stdout.write(`${issued.token}\n`);
      return 0;
    }
    case 'signing-key': {
      const client = await clientFor(config, values);
      if (subcommand === 'rotate') {
        print(await client.admin.signingKeys.rotate.mutate());
        return 0;
      }
      if (subcommand === 'list') {
        print(await client.admin.signingKeys.list.query());
        return 0;
      }
      throw new UsageError(`unknown signing-key command: ${subcommand ?? '(none)'}`);
    }
    case 'pricing': {
      const client = await clientFor(config, values);
      if (subcommand === 'get') {
        print(await client.admin.pricing.get.query());
        return 0;
      }
      if (subcommand !== 'set') throw new UsageError(`unknown pricing command: ${subcommand ?? '(none)'}`);
      const { pool } = values;
      if (pool === undefined || (values.price === undefined) === (values.clear !== true))
        throw new UsageError('pricing set needs --pool and one of --price MICRO or --clear');
      if (!isPool(pool)) throw new UsageError(`--pool must be one of ${POOLS.join(', ')}`);
      print(
        await client.admin.pricing.set.mutate({
          pool,
          microPer1kTokens: values.clear === true ? null : (values.price as string),
          ...(values.tenant === undefined ? {} : { tenantId: values.tenant }),
        }),
      );
      return 0;
    }
    case 'flags': {
      const client = await clientFor(config, values);
      if (subcommand === 'get') {
        print(await client.admin.flags.get.query());
        return 0;
      }
      if (subcommand !== 'set') throw new UsageError(`unknown flags command: ${subcommand ?? '(none)'}`);
      const { flag, enabled } = values;
      if (
        flag === undefined ||
        (enabled === undefined) === (values.clear !== true) ||
        (enabled !== undefined && enabled !== 'true' && enabled !== 'false')
      )
        throw new UsageError('flags set needs --flag and one of --enabled true|false or --clear');
      if (!isFlag(flag)) throw new UsageError(`--flag must be one of ${FLAGS.join(', ')}`);
      print(
        await client.admin.flags.set.mutate({
          flag,
          enabled: values.clear === true ? null : enabled === 'true',
          ...(values.tenant === undefined ? {} : { tenantId: values.tenant }),
        }),
      );
      return 0;
    }
    case 'audit': {
      if (values.tenant === undefined) throw new UsageError(`audit ${subcommand ?? ''} needs --tenant`);
      if (subcommand === 'export') {
        await exportAudit(await gatewayFor(config, values), values.tenant, values);
        return 0;
      }
      if (subcommand === 'verify') {
        const client = await clientFor(config, values);
        const verdict = await client.admin.audit.verify.query({ tenantId: values.tenant });
        print(verdict);
        return verdict.ok ? 0 : 1;
      }
      throw new UsageError(`unknown audit command: ${subcommand ?? '(none)'}`);
    }
    default:
      throw new UsageError(`unknown command: ${command}`);
  }
}

async function migrate(config: Config): Promise<number> {
  // With embedded defaults the server owns the PGlite files: run this only while it is stopped.
  const { createDb } = await import('../../db/index.js');
  const database = await createDb(
    isEmbedded(config)
      ? { dataDir: join(config.dataDir, 'pglite') }
      : { databaseUrl: config.databaseUrl as string },
  );
  try {
    await database.migrate();
    process.stdout.write(`migrations applied (${database.engine})\n`);
    return 0;
  } finally {
    await database.close();
  }
}

type GatewayOptions = { url?: string | undefined; token?: string | undefined };

async function gatewayFor(config: Config, values: GatewayOptions): Promise<{ url: string; token?: string }> {
  const url = values.url ?? `http://${config.host}:${config.port}`;
  await startedUp(url);
  // Read after start-up: on a first start the gateway generates the admin token file as it boots.
  const token = values.token ?? config.adminToken ?? (await readSecret(adminTokenPath(config.dataDir)));
  return token === undefined ? { url } : { url, token };
}

/** The typed client loads here, with the first command that needs it (`serve` does not). */
async function clientFor(config: Config, values: GatewayOptions) {
  const { createClient } = await import('../client.js');
  return createClient(await gatewayFor(config, values));
}

/** Copies the export to stdout as it arrives (it may be larger than memory); an error body goes to stderr. */
async function exportAudit(
  gateway: { url: string; token?: string },
  tenantId: string,
  range: { from?: string | undefined; to?: string | undefined },
): Promise<void> {
  const url = new URL(`/api/v1/admin/tenants/${encodeURIComponent(tenantId)}/audit.jsonl`, gateway.url);
  if (range.from !== undefined) url.searchParams.set('from', range.from);
  if (range.to !== undefined) url.searchParams.set('to', range.to);
  const response = await fetch(url, {
    headers: gateway.token === undefined ? {} : { authorization: `Bearer ${gateway.token}` },
  });
  if (!response.ok || response.body === null) {
    const body = (await response.json().catch(() => undefined)) as
      | { error?: { message?: string } }
      | undefined;
    throw new Error(
      `audit export failed (${response.status}): ${body?.error?.message ?? response.statusText}`,
    );
  }
  await pipeline(Readable.fromWeb(response.body as NodeReadableStream<Uint8Array>), process.stdout);
}

/**
 * 30 s: PGlite's very first start (initdb + migrations) takes a few seconds; a newcomer who runs a
 * command right after `npm start` should wait it out, not read an error.
 */
const START_UP_WAIT_MS = 30_000;

/**
 * Waits while the gateway is still starting: until its app is built, every route but /health
 * answers 503 `not_ready`. The full app answers a tRPC call without a token with 401, never
 * `not_ready`, so any other answer means it is up.
 */
async function startedUp(url: string): Promise<void> {
  const probe = new URL('/trpc/admin.system.info', url);
  const deadline = Date.now() + START_UP_WAIT_MS;
  for (;;) {
    let response: Response;
    try {
      response = await fetch(probe);
    } catch {
      throw new Error(
        `cannot reach the gateway at ${url}; is it running (npm start)? Otherwise pass --url or set HOST/PORT`,
      );
    }
    const body = (await response.json().catch(() => undefined)) as { error?: { code?: unknown } } | undefined;
    if (response.status !== 503 || body?.error?.code !== 'not_ready' || Date.now() >= deadline) return;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/**
 * Answers are printed as indented JSON; with `--field NAME`, only that field as plain text (a
 * string unquoted), so a shell can capture it: `TENANT=$(spicegate tenant create … --field id)`.
 */
function printer(field: string | undefined): (value: unknown) => void {
  return (value) => {
    if (field === undefined) {
      process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
      return;
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value) || !Object.hasOwn(value, field)) {
      // The call has happened (it may have made something shown only once): never lose its answer.
      process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
      throw new Error(`the answer has no field "${field}"`);
    }
    const selected = (value as Record<string, unknown>)[field];
    process.stdout.write(`${typeof selected === 'string' ? selected : JSON.stringify(selected)}\n`);
  };
}

run(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (error: unknown) => {
    if (
      error instanceof UsageError ||
      (error as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION'
    ) {
      process.stderr.write(`spicegate: ${(error as Error).message}\n${USAGE}\n`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`spicegate: ${(error as Error).message}\n`);
      process.exitCode = 1;
    }
  },
);
