import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import type { Context, Env } from 'hono';

export interface ClientAddressInput {
  /** The transport peer (Node socket, or the platform's verified client address); undefined if unknown. */
  socketAddress: string | undefined;
  /** The raw X-Forwarded-For header (several headers joined with ", "), if any. */
  forwardedFor: string | undefined;
  /** TRUST_PROXY_HOPS: proxies in front of us that append to X-Forwarded-For. */
  trustProxyHops: number;
}

export const LOOPBACK_BUCKET = 'loopback';
export const NO_ADDRESS_PREFIX = 'noaddr:';

/**
 * Who a request comes from, as a rate-limit bucket id (DESIGN.md §3, §6): `ip4:…`, `ip6:…/64`,
 * `loopback`, `via:<bucket>` or `noaddr:<16 hex>`, each explained where it is made.
 */
export function clientBucket(input: ClientAddressInput): string {
  const hops = Math.max(0, Math.trunc(input.trustProxyHops));
  const forwarded =
    hops === 0 || input.forwardedFor === undefined
      ? []
      : input.forwardedFor
          .split(',')
          .map((entry) => entry.trim())
          // An empty entry is no hop (`XFF: ` or `a,,b`): nobody appended anything there.
          .filter((entry) => entry !== '')
          // Each trusted proxy appends its peer, so only the last n entries are theirs; anything
          // further left the client wrote. n = 0: the socket peer only, XFF is never read.
          .slice(-hops);
  // Left to right: the chosen address first, then each trusted hop towards us. A chain shorter than
  // n starts at the farthest hop a trusted party wrote, as Express's `trust proxy = n` does.
  const chain = [...forwarded, input.socketAddress];
  const chosen = addressBucket(chain[0]);
  if (chosen !== undefined) return chosen;
  // An unusable entry (garbage, `unknown`) is charged to the nearest trusted hop that forwarded it,
  // in a bucket apart from that hop's own traffic.
  for (const hop of chain.slice(1)) {
    const bucket = addressBucket(hop);
    if (bucket !== undefined) return `via:${bucket}`;
  }
  // No usable address (never a live Node socket; `app.request`, a socket already gone): the header's
  // hash keeps honest callers apart, and preauth.ts charges a route's `noaddr:` buckets one budget.
  const digest = createHash('sha256')
    .update(input.forwardedFor ?? '')
    .update(input.forwardedFor === undefined ? '\0absent' : '\0present')
    .digest('hex');
  return `${NO_ADDRESS_PREFIX}${digest.slice(0, 16)}`;
}

export function isNoAddressBucket(bucket: string): boolean {
  return bucket.startsWith(NO_ADDRESS_PREFIX);
}

/** What @hono/node-server passes as the app's env: the Node request, whose socket is the peer. */
interface NodeIncoming {
  incoming?: { socket?: { remoteAddress?: string } };
}

/**
 * The socket peer on @hono/node-server (read as its `getConnInfo` does, without bundling that Node
 * helper into the Workers build), or undefined where there is none (`app.request` in tests, a socket
 * already closed). Other runtimes pass their own verified address (e.g. Workers'
 * `CF-Connecting-IP`) to the middleware instead of this.
 */
export function socketAddress<E extends Env>(c: Context<E>): string | undefined {
  const bindings = c.env as (NodeIncoming & { server?: NodeIncoming }) | undefined;
  return (bindings?.server ?? bindings)?.incoming?.socket?.remoteAddress;
}

/** The bucket of one address as written in a header or by the socket layer, or undefined if unusable. */
function addressBucket(raw: string | undefined): string | undefined {
  if (raw === undefined) return undefined;
  const address = stripPortAndZone(raw.trim());
  switch (isIP(address)) {
    case 4:
      return ipv4Bucket(address);
    case 6:
      return ipv6Bucket(address);
    default:
      return undefined;
  }
}

/** `1.2.3.4:80` → `1.2.3.4`; `[2001:db8::1]:443` → `2001:db8::1`; `fe80::1%eth0` → `fe80::1`. */
function stripPortAndZone(address: string): string {
  let result = address;
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(result);
  if (bracketed?.[1] !== undefined) result = bracketed[1];
  else if (/^[\d.]+:\d+$/.test(result)) result = result.slice(0, result.lastIndexOf(':'));
  const zone = result.indexOf('%');
  return zone === -1 ? result : result.slice(0, zone);
}

function ipv4Bucket(address: string): string | undefined {
  const first = Number(address.slice(0, address.indexOf('.')));
  // Local processes (health checkers, a sidecar, a proxy when TRUST_PROXY_HOPS is wrong) share one
  // bucket, apart from every real client.
  if (first === 127) return LOOPBACK_BUCKET;
  // 0.0.0.0/8 means "this host" and is never a source address a peer can have.
  if (first === 0) return undefined;
  return `ip4:${address}`;
}

function ipv6Bucket(address: string): string | undefined {
  const hextets = expandIpv6(address.toLowerCase());
  const [a, b, c, d, e, f, g, h] = hextets as [
    number,
    number,
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const upperZero = a === 0 && b === 0 && c === 0 && d === 0 && e === 0;
  // IPv4-mapped (`::ffff:1.2.3.4`): the same client seen through a dual-stack socket.
  if (upperZero && f === 0xffff) {
    return ipv4Bucket(`${g >> 8}.${g & 0xff}.${h >> 8}.${h & 0xff}`);
  }
  if (upperZero && f === 0 && g === 0) {
    if (h === 1) return LOOPBACK_BUCKET;
    // `::` is the unspecified address, never a real peer.
    if (h === 0) return undefined;
  }
  // By /64: one subscriber gets a whole /64 (RFC 6177), so a per-address bucket would hand one host
  // 2^64 fresh buckets.
  return `ip6:${formatIpv6([a, b, c, d, 0, 0, 0, 0])}/64`;
}

/**
 * Eight 16-bit groups of an address `isIP` has accepted as IPv6 (an IPv4 tail allowed). By hand,
 * since the input is already well-formed: no parser dependency on the pre-auth path.
 */
function expandIpv6(address: string): number[] {
  let text = address;
  const tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.indexOf('.', lastColon) !== -1) {
    const octets = text
      .slice(lastColon + 1)
      .split('.')
      .map(Number) as [number, number, number, number];
    tail.push((octets[0] << 8) | octets[1], (octets[2] << 8) | octets[3]);
    // Drop the tail and its separating colon, but keep a `::` that ends the head (`::1.2.3.4`).
    const beforeTail = text.slice(0, lastColon + 1);
    text = beforeTail.endsWith('::') ? beforeTail : beforeTail.slice(0, -1);
  }
  const parse = (part: string) =>
    part === '' ? [] : part.split(':').map((group) => Number.parseInt(group, 16));
  const gap = text.indexOf('::');
  const head = gap === -1 ? parse(text) : parse(text.slice(0, gap));
  const rest = gap === -1 ? [] : parse(text.slice(gap + 2));
  const missing = 8 - tail.length - head.length - rest.length;
  return [...head, ...new Array<number>(Math.max(0, missing)).fill(0), ...rest, ...tail];
}

/** RFC 5952 text: lower case, no leading zeros, the longest run (2+) of zero groups as `::`. */
function formatIpv6(groups: number[]): string {
  let bestStart = -1;
  let bestLength = 1;
  for (let start = 0; start < groups.length; ) {
    if (groups[start] !== 0) {
      start += 1;
      continue;
    }
    let end = start;
    while (end < groups.length && groups[end] === 0) end += 1;
    if (end - start > bestLength) {
      bestStart = start;
      bestLength = end - start;
    }
    start = end;
  }
  const hex = groups.map((group) => group.toString(16));
  if (bestStart === -1) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}
