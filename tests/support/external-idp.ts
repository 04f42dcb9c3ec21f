import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, type KeyObject } from 'jose';

export interface ExternalIdp {
  /** Its JWKS (AUTH_JWKS_URL). */
  url: string;
  /** How many times the JWKS was fetched. */
  fetches(): number;
  key: KeyObject;
  kid: string;
  close(): Promise<void>;
}

/** An external identity provider on a local port: one ES256 key, published at `url`. */
export async function startExternalIdp(): Promise<ExternalIdp> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const publicJwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(publicJwk);
  let fetches = 0;
  const server: Server = createServer((_req, res) => {
    fetches += 1;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ keys: [{ ...publicJwk, kid, alg: 'ES256', use: 'sig' }] }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/jwks.json`,
    fetches: () => fetches,
    key: privateKey as KeyObject,
    kid,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
