import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import { getConnInfo } from '@hono/node-server/conninfo';
import type { Context, Env } from 'hono';

/**
 * Who a request comes from, as a rate-limit bucket id (DESIGN.md §3, §6 "pre-auth per-IP limit").
 *
 * Which address counts (TRUST_PROXY_HOPS = n):
 * - n = 0: the socket peer only; X-Forwarded-For is never read, so a client cannot name itself.
 * - n > 0: the chain is `X-Forwarded-For entries…, socket peer`; each trusted proxy appends the
 *   address it received the request from, so the entry n places left of the socket peer (the n-th
 *   XFF entry from the right) is what our outermost trusted proxy saw. Entries further left were
 *   written by the client and are never read. A chain shorter than n (a proxy that appended
 *   nothing, or no XFF at all) uses its leftmost entry, i.e. the farthest hop a trusted party wrote
 *   (or the socket peer) — as Express's `trust proxy = n` does.
 *
 * Buckets:
 * - `ip4:a.b.c.d` — IPv4, and IPv4-mapped IPv6 (`::ffff:1.2.3.4`, `::ffff:102:304`), which is the
 *   same client seen through a dual-stack socket.
 * - `ip6:<prefix>/64` — IPv6 by its /64: one subscriber gets a whole /64 (RFC 6177), so a per-address
 *   bucket would hand a single host 2^64 fresh buckets.
 * - `loopback` — 127.0.0.0/8, ::1 and their mapped forms: local processes (health checkers, a
 *   sidecar, a local proxy when TRUST_PROXY_HOPS is wrong) share one bucket of their own, apart
 *   from every real client.
 * - `via:<bucket>` — the chosen entry is unusable (garbage, `unknown`, an unspecified address) but a
 *   hop to its right is usable: the request is charged to the nearest trusted hop that forwarded
 *   it. Only requests that carry no usable client address share it, never the hop's own traffic.
 * - `noaddr:<16 hex>` — no usable address anywhere. On Node this does not happen for a live
 *   connection (the socket peer is always known); it happens for in-process `app.request` calls
 *   and for a socket already gone. Nothing in such a request is trustworthy, so no per-client
 *   bucket is possible: the id hashes the whole X-Forwarded-For header (or its absence), which
 *   keeps honest callers apart, and the limiter (src/limits/preauth.ts) also charges every
 *   `noaddr:` request to one aggregate no-address budget per route, so varying the header buys
 *   no more than that budget. Not one shared `unknown` bucket, and never unlimited.
 *
 * IPv6 is expanded by hand after `node:net` `isIP` has validated it, so every string reaching the
 * expander is well-formed; that is ~30 lines and keeps a parser dependency off the pre-auth path
 * (ipaddr.js would do the same).
 */
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
          // Only the entries our trusted proxies wrote; anything further left is the client's.
          .slice(-hops);
  // Left to right: the chosen address first, then each trusted hop towards us.
  const chain = [...forwarded, input.socketAddress];
  const chosen = addressBucket(chain[0]);
  if (chosen !== undefined) return chosen;
  for (const hop of chain.slice(1)) {
    const bucket = addressBucket(hop);
    if (bucket !== undefined) return `via:${bucket}`;
  }
  const digest = createHash('sha256')
    .update(input.forwardedFor ?? '')
    .update(input.forwardedFor === undefined ? '\0absent' : '\0present')
    .digest('hex');
  return `${NO_ADDRESS_PREFIX}${digest.slice(0, 16)}`;
}

export function isNoAddressBucket(bucket: string): boolean {
  return bucket.startsWith(NO_ADDRESS_PREFIX);
}

/**
 * The socket peer on @hono/node-server, or undefined where there is none (`app.request` in tests,
 * a socket already closed). Other runtimes pass their own verified address (e.g. Workers'
 * `CF-Connecting-IP`) to the middleware instead of this.
 */
export function socketAddress<E extends Env>(c: Context<E>): string | undefined {
  try {
    return getConnInfo(c).remote.address;
  } catch {
    return undefined;
  }
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
  if (upperZero && f === 0xffff) {
    return ipv4Bucket(`${g >> 8}.${g & 0xff}.${h >> 8}.${h & 0xff}`);
  }
  if (upperZero && f === 0 && g === 0) {
    if (h === 1) return LOOPBACK_BUCKET;
    // `::` is the unspecified address, never a real peer.
    if (h === 0) return undefined;
  }
  return `ip6:${formatIpv6([a, b, c, d, 0, 0, 0, 0])}/64`;
}

/** Eight 16-bit groups of an address `isIP` has accepted as IPv6 (an IPv4 tail allowed). */
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
