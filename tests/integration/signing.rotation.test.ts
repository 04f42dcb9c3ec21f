import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { maintainSigningKeys } from '../../src/jobs/signing-maintenance.js';
import type { SigningKey } from '../../src/signing/keys.js';
import { localSigner, type Signer } from '../../src/signing/signer.js';
import { signS2sToken } from '../../src/signing/tokens.js';
import { createVerifier } from '../../src/signing/verifier.js';
import { createHarness, type Harness } from '../support/harness.js';
import { tempKeyFile } from '../support/key-file.js';
import { serve } from '../support/serve.js';

/**
 * A whole rotation, fast-forwarded: Date is faked (setTimeout and sockets are real), so the
 * gateway's clock, token lifetimes and the verifier's JWKS cache and cooldown all move together.
 */
describe('signing key rotation', () => {
  const T0 = Date.UTC(2026, 10, 22, 12, 0, 0);
  const STEP_MS = 5_000;
  let harness: Harness;
  let server: { url: string; close(): Promise<void> };
  let signer: Signer;

  beforeAll(async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(T0);
    signer = await localSigner({ file: tempKeyFile() });
    // Caller tokens live at most 10 minutes here, so the overlap ends within the test.
    harness = await createHarness({ signer, config: { adminTokenMaxTtlSeconds: 600 } });
    server = await serve(harness.app);
  });
  afterAll(async () => {
    vi.useRealTimers();
    await server.close();
    await harness.close();
  });

  const claims = {
    subject: 'u1',
    tenantId: 'ten_1',
    tier: 4,
    pool: 'standard',
    reservationId: 'res_1',
    keyId: 'key_1',
  };
  const kidOf = (token: string) =>
    (JSON.parse(Buffer.from(token.split('.')[0] as string, 'base64url').toString()) as { kid: string }).kid;
  const jwksKids = async () =>
    (
      (await (await fetch(`${server.url}/.well-known/jwks.json`)).json()) as { keys: { kid: string }[] }
    ).keys.map((key) => key.kid);

  it('a verifier hammering the gateway through the whole rotation sees zero failures', async () => {
    const verifier = createVerifier({
      jwksUrl: `${server.url}/.well-known/jwks.json`,
      issuer: 'spicegate',
      audience: 'finn',
    });
    const keyA = harness.services.signing.health().activeKid as string;
    const rotateAt = T0 + 100_000;
    let keyB: SigningKey | undefined;
    let tokenSignedByA: string | undefined;
    const failures: string[] = [];
    const seen = new Set<string>();

    for (let now = T0; now <= T0 + 1_500_000; now += STEP_MS) {
      vi.setSystemTime(now);
      if (now === rotateAt) {
        keyB = await harness.services.signing.rotate();
        // Published at once, signing only after the cache lifetime and skew (300 + 30 s).
        expect(keyB.state).toBe('pending');
        expect(Date.parse(keyB.activatedAt)).toBe(rotateAt + 330_000);
        expect(await jwksKids()).toEqual([keyA, keyB.kid]);
      }
      const token = await signS2sToken(harness.services, claims);
      seen.add(kidOf(token));
      if (keyB === undefined || now < Date.parse(keyB.activatedAt)) {
        expect(kidOf(token)).toBe(keyA);
        tokenSignedByA = token;
      } else {
        expect(kidOf(token)).toBe(keyB.kid);
        // A stays published while any token it signed can still be valid (plus the cache margin).
        if (now < Date.parse(keyB.activatedAt) + 60_000 + 330_000) expect(await jwksKids()).toContain(keyA);
      }
      try {
        const payload = await verifier.verify(token);
        expect(payload.tenant_id).toBe('ten_1');
      } catch (error) {
        failures.push(`${new Date(now).toISOString()} ${kidOf(token)}: ${(error as Error).message}`);
      }
    }
    expect(failures).toEqual([]);
    expect([...seen]).toEqual([keyA, keyB?.kid]);

    // After the overlap A is gone: retired, out of the JWKS, and nothing it signs verifies.
    expect(await jwksKids()).toEqual([keyB?.kid]);
    expect(harness.services.signing.list().find((key) => key.kid === keyA)?.state).toBe('retired');
    const lateA = await signer.signJwt(keyA, {
      iss: 'spicegate',
      aud: 'finn',
      iat: Math.floor(Date.now() / 1000),
      exp: Math.floor(Date.now() / 1000) + 60,
    });
    await expect(verifier.verify(lateA)).rejects.toThrow();
    expect(tokenSignedByA).toBeDefined();
  });

  it('an A token and a B token both verify during the overlap', async () => {
    const start = Date.now();
    const keyA = harness.services.signing.health().activeKid as string;
    const keyB = await harness.services.signing.rotate();
    const tokenA = await signS2sToken(harness.services, claims);
    vi.setSystemTime(Date.parse(keyB.activatedAt));
    const tokenB = await signS2sToken(harness.services, claims);
    expect([kidOf(tokenA), kidOf(tokenB)]).toEqual([keyA, keyB.kid]);
    const verifier = createVerifier({
      jwksUrl: `${server.url}/.well-known/jwks.json`,
      issuer: 'spicegate',
      audience: 'finn',
    });
    // tokenA was issued 330 s ago: past its 60 s life, so check it at its own time first.
    vi.setSystemTime(start);
    await expect(verifier.verify(tokenA)).resolves.toMatchObject({ sub: 'u1' });
    vi.setSystemTime(Date.parse(keyB.activatedAt));
    await expect(verifier.verify(tokenB)).resolves.toMatchObject({ sub: 'u1' });
  });

  it('S2S tokens carry the contract claims and a header naming the key', async () => {
    const token = await signS2sToken(harness.services, claims);
    const [header, payload] = token
      .split('.')
      .slice(0, 2)
      .map((part) => JSON.parse(Buffer.from(part, 'base64url').toString()) as Record<string, unknown>) as [
      Record<string, unknown>,
      Record<string, unknown>,
    ];
    expect(header).toEqual({ alg: 'ES256', kid: harness.services.signing.health().activeKid, typ: 'JWT' });
    expect(payload).toEqual({
      iss: 'spicegate',
      aud: 'finn',
      iat: Math.floor(Date.now() / 1000),
      exp: Math.floor(Date.now() / 1000) + 60,
      jti: expect.stringMatching(/^[0-9a-f-]{36}$/),
      sub: 'u1',
      tenant_id: 'ten_1',
      tier: 4,
      pool: 'standard',
      budget_reservation_id: 'res_1',
      key_id: 'key_1',
      contract_version: '1.0.0',
    });
  });

  it('a second rotation while one is pending returns the pending key', async () => {
    const first = await harness.services.signing.rotate();
    const second = await harness.services.signing.rotate();
    expect(second.kid).toBe(first.kid);
  });
});

describe('signing key age and automatic rotation', () => {
  const T0 = Date.UTC(2026, 0, 1);
  let harness: Harness;
  beforeAll(async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(T0);
    harness = await createHarness({ config: { signingRotateDays: 30, signingKeyMaxAgeDays: 90 } });
  });
  afterAll(async () => {
    vi.useRealTimers();
    await harness.close();
  });

  it('rotates once the active key is SIGNING_ROTATE_DAYS old, under a lease, once', async () => {
    const first = harness.services.signing.health().activeKid;
    vi.setSystemTime(T0 + 29 * 86_400_000);
    await maintainSigningKeys(harness.services, 'instance-a');
    expect(harness.services.signing.list()).toHaveLength(1);
    vi.setSystemTime(T0 + 30 * 86_400_000);
    // Two instances at once: one takes the rotation lease, the other finds it held.
    await Promise.all([
      maintainSigningKeys(harness.services, 'instance-a'),
      maintainSigningKeys(harness.services, 'instance-b'),
    ]);
    const keys = harness.services.signing.list();
    expect(keys.map((key) => key.state)).toEqual(['active', 'pending']);
    expect(keys[0]?.kid).toBe(first);
  });

  it('warns in /health and the metric when the active key is older than the maximum age', async () => {
    const harnessOld = await createHarness({ config: { signingKeyMaxAgeDays: 90 } });
    try {
      vi.setSystemTime(Date.now() + 91 * 86_400_000);
      const body = (await (await harnessOld.request('/health')).json()) as {
        signing: Record<string, unknown>;
      };
      expect(body.signing).toMatchObject({ warning: 'signing_key_older_than_max_age' });
      await maintainSigningKeys(harnessOld.services, 'instance-a');
      const metric = await harnessOld.services.metrics.registry.getSingleMetricAsString(
        'spicegate_signing_key_age_seconds',
      );
      expect(metric).toMatch(/spicegate_signing_key_age_seconds 78\d{5}/);
    } finally {
      await harnessOld.close();
    }
  });
});

const claims = {
  subject: 'u1',
  tenantId: 'ten_1',
  tier: 4,
  pool: 'standard',
  reservationId: 'res_1',
  keyId: 'key_1',
};

describe('several instances', () => {
  it('share a key file: a key rotated on one signs on the other; concurrent rotations make one key', async () => {
    const file = tempKeyFile();
    const first = await createHarness({ signer: await localSigner({ file }) });
    const second = await createHarness({ shareWith: first, signer: await localSigner({ file }) });
    try {
      const [a, b] = await Promise.all([first.services.signing.rotate(), second.services.signing.rotate()]);
      expect(a.kid).toBe(b.kid);
      expect(first.services.signing.list().filter((key) => key.state === 'pending')).toHaveLength(1);
      await second.services.signing.refresh();
      expect(second.services.signing.health().warning).toBeNull();
      vi.useFakeTimers({ toFake: ['Date'] });
      try {
        vi.setSystemTime(Date.parse(a.activatedAt));
        const token = await signS2sToken(second.services, claims);
        expect(JSON.parse(Buffer.from(token.split('.')[0] as string, 'base64url').toString()).kid).toBe(
          a.kid,
        );
      } finally {
        vi.useRealTimers();
      }
    } finally {
      await second.close();
      await first.close();
    }
  });

  it('an instance without the pending key’s private half says so in /health', async () => {
    const first = await createHarness({ signer: await localSigner({ file: tempKeyFile() }) });
    const second = await createHarness({
      shareWith: first,
      signer: await localSigner({ file: tempKeyFile() }),
    });
    try {
      await first.services.signing.rotate();
      await second.services.signing.refresh();
      const body = (await (await second.request('/health')).json()) as {
        signing: { warning: string | null };
      };
      expect(body.signing.warning).toBe('signing_private_key_missing');
    } finally {
      await second.close();
      await first.close();
    }
  });

  it('a signer that cannot keep keys refuses to rotate', async () => {
    const harness = await createHarness({ signer: await localSigner() });
    try {
      await expect(harness.services.signing.rotate()).rejects.toMatchObject({ code: 'conflict' });
      expect(harness.services.signing.list()).toHaveLength(1);
    } finally {
      await harness.close();
    }
  });
});
