import {
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JWK,
  type JWTPayload,
  type KeyObject,
  SignJWT,
} from 'jose';

/** The one algorithm the gateway signs with and accepts from itself. */
export const SIGNING_ALG = 'ES256';

/**
 * Where private signing keys live. Callers only ever name a key by its kid; the private half never
 * leaves the signer, so a KMS or Vault-transit signer can replace the local one without touching
 * them (it would create keys remotely and sign the JWS input remotely).
 */
export interface Signer {
  readonly kind: string;
  /** Makes a new key pair and returns its public half; kid = RFC 7638 thumbprint. */
  createKey(): Promise<{ kid: string; publicJwk: JWK }>;
  /** Whether this signer holds the private key `kid`. */
  has(kid: string): boolean;
  /** Public halves of the keys it was configured with (the first becomes the first key on a fresh database). */
  configuredKeys(): { kid: string; publicJwk: JWK }[];
  /** Whether keys it creates outlive this process (a key file); rotation needs that. */
  readonly persistent: boolean;
  /** Picks up keys another process added (a shared key file). */
  reload(): Promise<void>;
  /** A compact JWS: header {alg: ES256, kid, typ: JWT}, the given claims. */
  signJwt(kid: string, claims: JWTPayload): Promise<string>;
}

/** SIGNING_PRIVATE_JWKS (already checked to be a JSON array by the config schema). */
export function parsePrivateJwks(text: string | undefined): JWK[] {
  return text === undefined ? [] : (JSON.parse(text) as JWK[]);
}

export interface KeyFile {
  read(): Promise<JWK[]>;
  /** Saves one private key (readable by the owner only); never touches the others. */
  add(kid: string, jwk: JWK): Promise<void>;
}

/**
 * The built-in signer: private keys in process memory, loaded from configuration
 * (SIGNING_PRIVATE_JWKS) and/or a key file in DATA_DIR (mode 0600), where new keys are saved.
 * Without a key file, new keys live only as long as the process (Workers, tests).
 */
export async function localSigner(options: { configured?: JWK[]; file?: KeyFile } = {}): Promise<Signer> {
  const privateJwks = new Map<string, JWK>();
  const keys = new Map<string, Awaited<ReturnType<typeof importJWK>>>();
  const add = async (jwk: JWK) => {
    if (jwk.kty !== 'EC' || jwk.crv !== 'P-256' || typeof jwk.d !== 'string') {
      throw new Error('signing keys must be private EC P-256 JWKs');
    }
    const kid = await thumbprint(jwk);
    if (jwk.kid !== undefined && jwk.kid !== kid)
      throw new Error(`signing key kid ${jwk.kid} is not its thumbprint`);
    privateJwks.set(kid, { ...jwk, kid });
    keys.set(kid, await importJWK({ ...jwk, kid }, SIGNING_ALG));
  };
  for (const jwk of options.configured ?? []) await add(jwk);
  const configured = [...privateJwks.values()].map((jwk) => ({
    kid: jwk.kid as string,
    publicJwk: publicHalf(jwk),
  }));
  const loadFile = async () => {
    for (const jwk of (await options.file?.read()) ?? []) {
      const kid = await thumbprint(jwk);
      if (!privateJwks.has(kid)) await add(jwk);
    }
  };
  await loadFile();

  return {
    kind: 'local',
    has: (kid) => keys.has(kid),
    configuredKeys: () => configured,
    persistent: options.file !== undefined,
    reload: loadFile,
    createKey: async () => {
      const { privateKey } = await generateKeyPair(SIGNING_ALG, { extractable: true });
      const jwk = await exportJWK(privateKey);
      await add(jwk);
      const kid = await thumbprint(jwk);
      await options.file?.add(kid, privateJwks.get(kid) as JWK);
      return { kid, publicJwk: publicHalf(privateJwks.get(kid) as JWK) };
    },
    signJwt: async (kid, claims) => {
      const key = keys.get(kid);
      if (key === undefined) throw new Error(`no private key for signing key ${kid}`);
      return new SignJWT(claims)
        .setProtectedHeader({ alg: SIGNING_ALG, kid, typ: 'JWT' })
        .sign(key as KeyObject);
    },
  };
}

function publicHalf(jwk: JWK): JWK {
  return {
    kty: 'EC',
    crv: jwk.crv ?? '',
    x: jwk.x ?? '',
    y: jwk.y ?? '',
    kid: jwk.kid ?? '',
    alg: SIGNING_ALG,
    use: 'sig',
  };
}

/** RFC 7638 thumbprint of the public members: the kid, safe in URLs and keys ([A-Za-z0-9_-]). */
function thumbprint(jwk: JWK): Promise<string> {
  return calculateJwkThumbprint({ kty: 'EC', crv: jwk.crv ?? '', x: jwk.x ?? '', y: jwk.y ?? '' });
}
