import {
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  type JWK,
  type JWTPayload,
  type KeyObject,
  SignJWT,
} from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localSigner } from '../../src/signing/signer.js';
import { CALLER_AUDIENCE, issueCallerToken } from '../../src/signing/tokens.js';
import { type ExternalIdp, startExternalIdp } from '../support/external-idp.js';
import { createHarness, type Harness } from '../support/harness.js';
import { tempKeyFile } from '../support/key-file.js';

/**
 * tRPC callers' JWTs: every malformed, misdirected or forged token is a 401, never a 5xx. The test
 * knows the gateway's private key (given through the signer), so it can forge tokens that are
 * correctly signed but wrong in exactly one way.
 */
let harness: Harness;
let privateJwk: JWK;
let kid: string;
let gatewayKey: KeyObject;
let externalIdp: ExternalIdp;

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

function claims(overrides: JWTPayload = {}): JWTPayload {
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: 'spicegate',
    aud: CALLER_AUDIENCE,
    sub: 'tester',
    role: 'admin',
    iat: now,
    exp: now + 300,
    ...overrides,
  };
}

function without(payload: JWTPayload, claim: string): JWTPayload {
  const { [claim]: _dropped, ...rest } = payload;
  return rest;
}

async function signWith(
  key: KeyObject,
  header: Record<string, unknown>,
  payload: JWTPayload,
): Promise<string> {
  return new SignJWT(payload).setProtectedHeader({ alg: 'ES256', typ: 'JWT', ...header }).sign(key);
}

beforeAll(async () => {
  const pair = await generateKeyPair('ES256', { extractable: true });
  privateJwk = await exportJWK(pair.privateKey);
  gatewayKey = pair.privateKey as KeyObject;
  kid = await calculateJwkThumbprint(privateJwk);
  externalIdp = await startExternalIdp();
  harness = await createHarness({
    signer: await localSigner({ configured: [privateJwk], file: tempKeyFile() }),
    config: {
      externalAuth: { jwksUrl: externalIdp.url, issuer: 'https://idp.example', audience: 'spicegate-api' },
    },
  });
});
afterAll(async () => {
  await harness.close();
  await externalIdp.close();
});

async function statusWith(token: string): Promise<number> {
  const response = await harness.request('/trpc/admin.system.info', {
    headers: { authorization: `Bearer ${token}` },
  });
  return response.status;
}

describe('a correctly signed admin token (control)', () => {
  it('is accepted, so every 401 below is caused by the one thing wrong with it', async () => {
    expect(harness.services.signing.health().activeKid).toBe(kid);
    expect(await statusWith(await signWith(gatewayKey, { kid }, claims()))).toBe(200);
    const { token } = await issueCallerToken(harness.services, {
      role: 'admin',
      subject: 'cli',
      ttlSeconds: 60,
    });
    expect(await statusWith(token)).toBe(200);
  });
});

describe('tokens refused with 401', () => {
  const cases: [string, () => Promise<string>][] = [
    ['alg none', async () => `${b64({ alg: 'none', typ: 'JWT', kid })}.${b64(claims())}.`],
    [
      'HS256 signed with the public key as the secret',
      async () => {
        const { d: _d, ...publicJwk } = privateJwk;
        const secret = new TextEncoder().encode(JSON.stringify({ ...publicJwk, kid }));
        return new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', typ: 'JWT', kid }).sign(secret);
      },
    ],
    [
      'RS256',
      async () => {
        const { privateKey } = await generateKeyPair('RS256');
        return new SignJWT(claims()).setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid }).sign(privateKey);
      },
    ],
    [
      'ES384',
      async () => {
        const { privateKey } = await generateKeyPair('ES384');
        return new SignJWT(claims()).setProtectedHeader({ alg: 'ES384', typ: 'JWT', kid }).sign(privateKey);
      },
    ],
    [
      'a missing kid',
      () => new SignJWT(claims()).setProtectedHeader({ alg: 'ES256', typ: 'JWT' }).sign(gatewayKey),
    ],
    ['an unknown kid', () => signWith(gatewayKey, { kid: 'unknownKid0123456789' }, claims())],
    ['a kid with a path', () => signWith(gatewayKey, { kid: `../../${kid}` }, claims())],
    ['a kid with a quote', () => signWith(gatewayKey, { kid: `${kid}"` }, claims())],
    [
      'an embedded jwk header of the attacker’s own key',
      async () => {
        const attacker = await generateKeyPair('ES256', { extractable: true });
        const jwk = await exportJWK(attacker.publicKey);
        return signWith(attacker.privateKey as KeyObject, { kid, jwk }, claims());
      },
    ],
    [
      'jku and x5u headers pointing at the attacker',
      async () => {
        const attacker = await generateKeyPair('ES256');
        return signWith(
          attacker.privateKey as KeyObject,
          { kid, jku: externalIdp.url, x5u: externalIdp.url },
          claims(),
        );
      },
    ],
    ['a wrong issuer', () => signWith(gatewayKey, { kid }, claims({ iss: 'someone-else' }))],
    ['a wrong audience (an S2S token)', () => signWith(gatewayKey, { kid }, claims({ aud: 'finn' }))],
    [
      'an expired token',
      () => signWith(gatewayKey, { kid }, claims({ exp: Math.floor(Date.now() / 1000) - 120 })),
    ],
    [
      'nbf in the future',
      () => signWith(gatewayKey, { kid }, claims({ nbf: Math.floor(Date.now() / 1000) + 600 })),
    ],
    ['a wrong typ', () => signWith(gatewayKey, { kid, typ: 'at+jwt' }, claims())],
    ['no role', () => signWith(gatewayKey, { kid }, claims({ role: undefined }))],
    ['no exp', () => signWith(gatewayKey, { kid }, without(claims(), 'exp'))],
    ['no sub', () => signWith(gatewayKey, { kid }, without(claims(), 'sub'))],
    ['an unknown role', () => signWith(gatewayKey, { kid }, claims({ role: 'root' }))],
    ['a member without a tenant', () => signWith(gatewayKey, { kid }, claims({ role: 'member' }))],
    [
      'a DER-encoded signature',
      async () => {
        const token = await signWith(gatewayKey, { kid }, claims());
        const [header, payload, signature] = token.split('.') as [string, string, string];
        return `${header}.${payload}.${Buffer.from(derFromRaw(Buffer.from(signature, 'base64url'))).toString('base64url')}`;
      },
    ],
    ['garbage', async () => 'not.a.jwt'],
    ['three empty parts', async () => '..'],
  ];

  it.each(cases)('%s', async (_, forge) => {
    const fetchesBefore = externalIdp.fetches();
    expect(await statusWith(await forge())).toBe(401);
    // Headers that name key locations are never followed.
    expect(externalIdp.fetches()).toBe(fetchesBefore);
  });
});

describe('an external issuer', () => {
  const external = (payload: JWTPayload, header: Record<string, unknown> = {}) =>
    signWith(
      externalIdp.key,
      { kid: externalIdp.kid, ...header },
      {
        iss: 'https://idp.example',
        aud: 'spicegate-api',
        sub: 'sso-user',
        iat: Math.floor(Date.now() / 1000),
        exp: Math.floor(Date.now() / 1000) + 300,
        ...payload,
      },
    );

  it('is trusted through its JWKS for the configured issuer and audience', async () => {
    expect(await statusWith(await external({ role: 'operator' }))).toBe(200);
    expect(await statusWith(await external({ role: 'operator', aud: 'other' }))).toBe(401);
  });

  it('fetches its JWKS at most once per cooldown, however many unknown kids arrive', async () => {
    await statusWith(await external({ role: 'operator' }));
    const before = externalIdp.fetches();
    for (let i = 0; i < 10; i += 1) {
      expect(await statusWith(await external({ role: 'operator' }, { kid: `forged${i}` }))).toBe(401);
    }
    expect(externalIdp.fetches() - before).toBeLessThanOrEqual(1);
  });
});

/** ES256 raw r||s (64 bytes) → ASN.1 DER SEQUENCE { INTEGER r, INTEGER s }. */
function derFromRaw(raw: Buffer): Buffer {
  const integer = (bytes: Buffer) => {
    let trimmed = bytes;
    while (trimmed.length > 1 && trimmed[0] === 0) trimmed = trimmed.subarray(1);
    if ((trimmed[0] as number) & 0x80) trimmed = Buffer.concat([Buffer.from([0]), trimmed]);
    return Buffer.concat([Buffer.from([0x02, trimmed.length]), trimmed]);
  };
  const body = Buffer.concat([integer(raw.subarray(0, 32)), integer(raw.subarray(32))]);
  return Buffer.concat([Buffer.from([0x30, body.length]), body]);
}
