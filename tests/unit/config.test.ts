import { describe, expect, it } from 'vitest';
import { ENV_NAMES, parseConfig } from '../../src/config.js';
import { DEFAULT_PACKS } from '../../src/payments/packs.js';
import { DEFAULT_PRICES } from '../../src/pricing/pricing.js';
import { DEFAULT_TIERS } from '../../src/tenants/tiers.js';

function parse(env: Record<string, string>) {
  return parseConfig(env);
}

describe('parseConfig', () => {
  it('gives the documented defaults for an empty environment', () => {
    const result = parse({});
    expect(result).toEqual({
      ok: true,
      config: {
        port: 8787,
        host: '127.0.0.1',
        dataDir: './.data',
        maxBodyBytes: 1_048_576,
        upstream: 'local',
        localModelTokens: 32,
        localModelDelayMs: 0,
        upstreamConnectTimeoutMs: 5_000,
        upstreamTimeoutMs: 60_000,
        relayGraceMs: 30_000,
        upstreamFirstByteTimeoutMs: 20_000,
        modelAliases: {},
        upstreamModels: {},
        tiers: DEFAULT_TIERS,
        prices: DEFAULT_PRICES,
        poolLimits: {},
        trustProxyHops: 0,
        trpcMaxBatch: 20,
        nowpaymentsApiUrl: 'https://api.nowpayments.io/v1',
        nowpaymentsIpnSecrets: [],
        payments: 'on',
        packs: DEFAULT_PACKS,
        logLevel: 'info',
        otelEnabled: false,
        shutdownTimeoutMs: 25_000,
        conservationIntervalMs: 300_000,
        paymentReconcileIntervalMs: 300_000,
        reservationTtlMs: 300_000,
        reaperIntervalMs: 30_000,
        jobs: 'on',
        benchRlsBypass: false,
        jwtIssuer: 'spicegate',
        s2sAudience: 'finn',
        signingKeyMaxAgeDays: 90,
        apiKeysMaxActive: 10,
        jwksMaxAgeSeconds: 300,
        jwtClockSkewSeconds: 30,
        s2sTokenTtlSeconds: 60,
        adminTokenMaxTtlSeconds: 86_400,
        notYetInEffect: [],
      },
    });
  });

  it('names each set variable whose feature has not landed, and OTEL_ENABLED only when true', () => {
    const set = parse({ NATS_URL: 'nats://127.0.0.1:4222', OTEL_ENABLED: 'true', NOWPAYMENTS_API_KEY: 'np' });
    expect(set.ok && set.config.notYetInEffect).toEqual(['OTEL_ENABLED', 'NATS_URL']);
    const off = parse({ OTEL_ENABLED: 'false' });
    expect(off.ok && off.config.notYetInEffect).toEqual([]);
  });

  it('treats an empty or blank string as unset', () => {
    const result = parse({ PORT: '', REDIS_URL: '  ', DATABASE_URL: '', LOG_LEVEL: '' });
    expect(result.ok && result.config.port).toBe(8787);
    expect(result.ok && 'redisUrl' in result.config).toBe(false);
    expect(result.ok && 'databaseUrl' in result.config).toBe(false);
  });

  it('reads every variable it knows', () => {
    const result = parse({
      PORT: '9000',
      HOST: '0.0.0.0',
      DATA_DIR: '/var/lib/spicegate',
      DATABASE_URL: 'postgres://u@db:5432/sg',
      MAX_BODY_BYTES: '2048',
      METRICS_TOKEN: 'm'.repeat(20),
      REDIS_URL: 'rediss://cache:6380',
      UPSTREAM: 'finn',
      UPSTREAM_URL: 'https://finn.internal',
      UPSTREAM_API_KEY: 'k',
      LOCAL_MODEL_TOKENS: '64',
      LOCAL_MODEL_DELAY_MS: '5',
      UPSTREAM_CONNECT_TIMEOUT_MS: '2000',
      UPSTREAM_TIMEOUT_MS: '30000',
      UPSTREAM_FIRST_BYTE_TIMEOUT_MS: '8000',
      MODEL_ALIASES: 'gpt-4o-mini=cheap',
      UPSTREAM_MODELS: 'cheap=tiny',
      TIERS: '{"2":{"pools":["standard","cheap"],"tenantRpm":5}}',
      POOL_PRICES: 'cheap=150,flagship=20000',
      POOL_LIMITS: '{"reasoning":100000,"flagship":5000}',
      TRUST_PROXY_HOPS: '1',
      TRPC_MAX_BATCH: '50',
      API_KEY_PEPPERS: `2:${'b'.repeat(32)},1:${'a'.repeat(32)}`,
      API_KEYS_MAX_ACTIVE: '5',
      ADMIN_TOKEN: 'a'.repeat(32),
      NOWPAYMENTS_IPN_SECRET: 'ipnsecret,oldsecret',
      NOWPAYMENTS_API_KEY: 'np',
      NOWPAYMENTS_API_URL: 'https://sandbox.example/v1',
      NOWPAYMENTS_IPN_URL: 'https://gw.example/api/crypto/webhook',
      PAYMENTS: 'off',
      PAYMENT_PACKS: 'small=1.50:1000000,big=100:120000000',
      LOG_LEVEL: 'debug',
      OTEL_ENABLED: '1',
      NATS_URL: 'nats://127.0.0.1:4222',
      SHUTDOWN_TIMEOUT_MS: '1000',
      CONSERVATION_INTERVAL_MS: '60000',
      PAYMENT_RECONCILE_INTERVAL_MS: '120000',
      RESERVATION_TTL_MS: '120000',
      REAPER_INTERVAL_MS: '5000',
      JOBS: 'off',
      SPICEGATE_BENCH_RLS_BYPASS: 'true',
      JWT_ISSUER: 'https://gw.example',
      S2S_AUDIENCE: 'finn-prod',
      SIGNING_PRIVATE_JWKS: '[]',
      SIGNING_ROTATE_DAYS: '30',
      SIGNING_KEY_MAX_AGE_DAYS: '60',
      JWKS_MAX_AGE_SECONDS: '120',
      JWT_CLOCK_SKEW_SECONDS: '10',
      S2S_TOKEN_TTL_SECONDS: '45',
      ADMIN_TOKEN_MAX_TTL_SECONDS: '3600',
      AUTH_JWKS_URL: 'https://idp.example/jwks',
      AUTH_ISSUER: 'https://idp.example',
      AUTH_AUDIENCE: 'spicegate',
    });
    expect(result).toEqual({
      ok: true,
      config: {
        port: 9000,
        host: '0.0.0.0',
        dataDir: '/var/lib/spicegate',
        databaseUrl: 'postgres://u@db:5432/sg',
        maxBodyBytes: 2048,
        metricsToken: 'm'.repeat(20),
        redisUrl: 'rediss://cache:6380',
        upstream: 'finn',
        upstreamUrl: 'https://finn.internal',
        upstreamApiKey: 'k',
        localModelTokens: 64,
        localModelDelayMs: 5,
        upstreamConnectTimeoutMs: 2_000,
        upstreamTimeoutMs: 30_000,
        relayGraceMs: 30_000,
        upstreamFirstByteTimeoutMs: 8_000,
        modelAliases: { 'gpt-4o-mini': 'cheap' },
        upstreamModels: { cheap: 'tiny' },
        prices: { ...DEFAULT_PRICES, cheap: 150n, flagship: 20_000n },
        poolLimits: { reasoning: 100_000, flagship: 5_000 },
        tiers: DEFAULT_TIERS.map((limits, index) =>
          index === 1 ? { ...limits, tenantRpm: 5, pools: ['cheap', 'standard'] } : limits,
        ),
        trustProxyHops: 1,
        trpcMaxBatch: 50,
        apiKeyPeppers: `2:${'b'.repeat(32)},1:${'a'.repeat(32)}`,
        adminToken: 'a'.repeat(32),
        nowpaymentsIpnSecrets: ['ipnsecret', 'oldsecret'],
        nowpaymentsApiKey: 'np',
        nowpaymentsApiUrl: 'https://sandbox.example/v1',
        nowpaymentsIpnUrl: 'https://gw.example/api/crypto/webhook',
        payments: 'off',
        packs: {
          small: { name: 'small', priceAmount: '1.50', priceCurrency: 'usd', creditsMicro: 1_000_000n },
          big: { name: 'big', priceAmount: '100', priceCurrency: 'usd', creditsMicro: 120_000_000n },
        },
        logLevel: 'debug',
        otelEnabled: true,
        natsUrl: 'nats://127.0.0.1:4222',
        shutdownTimeoutMs: 1000,
        conservationIntervalMs: 60_000,
        paymentReconcileIntervalMs: 120_000,
        reservationTtlMs: 120_000,
        reaperIntervalMs: 5_000,
        jobs: 'off',
        benchRlsBypass: true,
        jwtIssuer: 'https://gw.example',
        s2sAudience: 'finn-prod',
        signingPrivateJwks: '[]',
        signingRotateDays: 30,
        signingKeyMaxAgeDays: 60,
        apiKeysMaxActive: 5,
        jwksMaxAgeSeconds: 120,
        jwtClockSkewSeconds: 10,
        s2sTokenTtlSeconds: 45,
        adminTokenMaxTtlSeconds: 3600,
        externalAuth: {
          jwksUrl: 'https://idp.example/jwks',
          issuer: 'https://idp.example',
          audience: 'spicegate',
        },
        notYetInEffect: ['OTEL_ENABLED', 'NATS_URL'],
      },
    });
  });

  it.each([
    ['PORT', 'abc'],
    ['PORT', '70000'],
    ['PORT', '80.5'],
    ['MAX_BODY_BYTES', '-1'],
    ['DATABASE_URL', 'mysql://x'],
    ['DATABASE_URL', 'not a url'],
    ['REDIS_URL', 'http://cache'],
    ['UPSTREAM', 'gpt'],
    ['LOG_LEVEL', 'loud'],
    ['OTEL_ENABLED', 'yes'],
    ['ADMIN_TOKEN', 'short'],
    ['TRUST_PROXY_HOPS', '-1'],
    ['TRPC_MAX_BATCH', '0'],
    ['LOCAL_MODEL_TOKENS', '0'],
    ['SIGNING_PRIVATE_JWKS', '{"kty":"EC"}'],
    ['API_KEY_PEPPERS', 'short'],
    ['API_KEY_PEPPERS', `1:${'a'.repeat(32)},1:${'b'.repeat(32)}`],
    ['AUTH_JWKS_URL', 'ftp://idp'],
    ['UPSTREAM_TIMEOUT_MS', '0'],
    ['RESERVATION_TTL_MS', '999'],
    ['REAPER_INTERVAL_MS', '99'],
    ['PAYMENT_RECONCILE_INTERVAL_MS', '9999'],
    ['JOBS', 'maybe'],
    ['SPICEGATE_BENCH_RLS_BYPASS', 'maybe'],
    ['PAYMENTS', 'maybe'],
    ['NOWPAYMENTS_IPN_SECRET', 'short'],
    ['NOWPAYMENTS_IPN_SECRET', 'longenough,short'],
    ['NOWPAYMENTS_IPN_SECRET', 'one-secret,two-secret,three-secret'],
    ['NOWPAYMENTS_IPN_SECRET', 'longenough, short  '],
    ['NOWPAYMENTS_IPN_URL', 'ftp://gw'],
    ['PAYMENT_PACKS', 'starter=5'],
    ['PAYMENT_PACKS', 'starter=5:0'],
    ['PAYMENT_PACKS', 'starter=5:1.5'],
    ['PAYMENT_PACKS', 'Starter=5:100'],
    ['UPSTREAM_CONNECT_TIMEOUT_MS', 'soon'],
    ['MODEL_ALIASES', 'gpt-4o'],
    ['MODEL_ALIASES', 'gpt-4o=platinum'],
    ['MODEL_ALIASES', 'cheap=standard'],
    ['UPSTREAM_MODELS', 'gold=gpt-4o'],
    ['POOL_PRICES', 'cheap=0'],
    ['POOL_PRICES', 'gold=100'],
    ['POOL_PRICES', 'cheap=1.5'],
    ['TIERS', 'not json'],
    ['TIERS', '{"10":{"tenantRpm":5}}'],
    ['TIERS', '{"1":{"pools":["gold"]}}'],
    ['TIERS', '{"1":{"pools":[]}}'],
    ['TIERS', '{"1":{"tenantRpm":-1}}'],
    ['TIERS', '{"1":{"rpm":5}}'],
    ['POOL_LIMITS', 'not json'],
    ['POOL_LIMITS', '[100]'],
    ['POOL_LIMITS', '{"gold":100}'],
    ['POOL_LIMITS', '{"cheap":0}'],
    ['POOL_LIMITS', '{"cheap":1.5}'],
    ['POOL_LIMITS', '{"cheap":"100"}'],
    ['POOL_LIMITS', '{"cheap":1000000001}'],
  ])('rejects %s=%s, naming the variable', (name, value) => {
    const result = parse({ [name]: value });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.variable).toBe(name);
    expect(result.message.startsWith(`${name} `)).toBe(true);
    expect(result.message).not.toContain('\n');
  });

  it('reads two IPN secrets around their comma, spaces trimmed', () => {
    const parsed = parse({ NOWPAYMENTS_IPN_SECRET: ' current-secret , previous-secret ' });
    expect(parsed.ok && parsed.config.nowpaymentsIpnSecrets).toEqual(['current-secret', 'previous-secret']);
  });

  it('never repeats a rejected value, which may be a secret', () => {
    const result = parse({ ADMIN_TOKEN: 'hunter2-secret' });
    expect(result.ok).toBe(false);
    expect(JSON.stringify(result)).not.toContain('hunter2-secret');
  });

  it('reads model aliases and upstream models as name=value pairs', () => {
    const result = parse({
      MODEL_ALIASES: 'gpt-4o-mini=cheap,gpt-4o=reasoning',
      UPSTREAM_MODELS: 'cheap=llama-3.1-8b',
    });
    expect(result.ok && result.config.modelAliases).toEqual({
      'gpt-4o-mini': 'cheap',
      'gpt-4o': 'reasoning',
    });
    expect(result.ok && result.config.upstreamModels).toEqual({ cheap: 'llama-3.1-8b' });
    const defaults = parse({});
    expect(
      defaults.ok && [defaults.config.upstreamConnectTimeoutMs, defaults.config.upstreamTimeoutMs],
    ).toEqual([5_000, 60_000]);
  });

  it('bounds the first-byte timeout by the total timeout: refuses a larger one, defaults to the lower', () => {
    expect(parse({ UPSTREAM_TIMEOUT_MS: '10000', UPSTREAM_FIRST_BYTE_TIMEOUT_MS: '10001' })).toEqual({
      ok: false,
      variable: 'UPSTREAM_FIRST_BYTE_TIMEOUT_MS',
      message: 'UPSTREAM_FIRST_BYTE_TIMEOUT_MS must not exceed UPSTREAM_TIMEOUT_MS',
    });
    const lower = parse({ UPSTREAM_TIMEOUT_MS: '10000' });
    expect(lower.ok && lower.config.upstreamFirstByteTimeoutMs).toBe(10_000);
    const equal = parse({ UPSTREAM_TIMEOUT_MS: '10000', UPSTREAM_FIRST_BYTE_TIMEOUT_MS: '10000' });
    expect(equal.ok && equal.config.upstreamFirstByteTimeoutMs).toBe(10_000);
  });

  it('requires UPSTREAM_URL for a remote upstream', () => {
    expect(parse({ UPSTREAM: 'openai' })).toEqual({
      ok: false,
      variable: 'UPSTREAM_URL',
      message: 'UPSTREAM_URL is required when UPSTREAM=openai',
    });
  });

  it('reads the Upstash REST pair, and refuses one without the other', () => {
    const both = parse({
      UPSTASH_REDIS_REST_URL: 'https://eu1.upstash.io',
      UPSTASH_REDIS_REST_TOKEN: 'tok_12345678',
    });
    expect(both.ok && both.config.upstash).toEqual({ url: 'https://eu1.upstash.io', token: 'tok_12345678' });
    expect(parse({ UPSTASH_REDIS_REST_URL: 'https://eu1.upstash.io' })).toMatchObject({
      ok: false,
      variable: 'UPSTASH_REDIS_REST_TOKEN',
    });
    expect(parse({ UPSTASH_REDIS_REST_TOKEN: 'tok_12345678' })).toMatchObject({
      ok: false,
      variable: 'UPSTASH_REDIS_REST_URL',
    });
  });

  it('requires the three AUTH_ variables together', () => {
    expect(parse({ AUTH_ISSUER: 'https://idp.example' })).toMatchObject({
      ok: false,
      variable: 'AUTH_JWKS_URL',
    });
    expect(parse({ AUTH_JWKS_URL: 'https://idp.example/jwks', AUTH_ISSUER: 'x' })).toMatchObject({
      ok: false,
      variable: 'AUTH_AUDIENCE',
    });
  });

  it('ignores variables it does not know', () => {
    expect(parse({ SOMETHING_ELSE: 'x', PATH: '/bin' }).ok).toBe(true);
  });

  it('knows every variable DESIGN.md §6 names', () => {
    const documented = [
      'PORT',
      'HOST',
      'DATA_DIR',
      'DATABASE_URL',
      'MAX_BODY_BYTES',
      'METRICS_TOKEN',
      'REDIS_URL',
      'UPSTREAM',
      'UPSTREAM_URL',
      'UPSTREAM_API_KEY',
      'LOCAL_MODEL_TOKENS',
      'LOCAL_MODEL_DELAY_MS',
      'TRUST_PROXY_HOPS',
      'API_KEY_PEPPERS',
      'ADMIN_TOKEN',
      'NOWPAYMENTS_IPN_SECRET',
      'NOWPAYMENTS_API_KEY',
      'NOWPAYMENTS_API_URL',
      'LOG_LEVEL',
      'OTEL_ENABLED',
      'NATS_URL',
      'POOL_LIMITS',
    ];
    expect(ENV_NAMES).toEqual(expect.arrayContaining(documented));
  });
});
