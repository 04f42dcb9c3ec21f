import { describe, expect, it } from 'vitest';
import { clientBucket, isNoAddressBucket, LOOPBACK_BUCKET } from '../../src/http/client-ip.js';

const bucket = (socketAddress: string | undefined, forwardedFor?: string, trustProxyHops = 0) =>
  clientBucket({ socketAddress, forwardedFor, trustProxyHops });

describe('TRUST_PROXY_HOPS=0: the socket peer only', () => {
  it('uses the socket address', () => {
    expect(bucket('203.0.113.7')).toBe('ip4:203.0.113.7');
  });

  it('ignores X-Forwarded-For entirely, so a spoofed header buys no fresh bucket', () => {
    for (const spoof of ['198.51.100.1', '198.51.100.2, 198.51.100.3', '::1', 'garbage', '']) {
      expect(bucket('203.0.113.7', spoof)).toBe('ip4:203.0.113.7');
    }
  });
});

describe('TRUST_PROXY_HOPS=1: the entry our proxy appended', () => {
  const proxy = '10.0.0.1';

  it('uses the rightmost X-Forwarded-For entry', () => {
    expect(bucket(proxy, '198.51.100.7', 1)).toBe('ip4:198.51.100.7');
  });

  it('ignores every entry left of it: whatever the client prepends, the bucket stays', () => {
    for (const spoof of ['1.1.1.1', '2.2.2.2, 3.3.3.3', '::1', 'unknown', '127.0.0.1']) {
      expect(bucket(proxy, `${spoof}, 198.51.100.7`, 1)).toBe('ip4:198.51.100.7');
    }
  });

  it('reads several X-Forwarded-For headers joined by commas the same way', () => {
    expect(bucket(proxy, '1.1.1.1, 198.51.100.7', 1)).toBe(bucket(proxy, '198.51.100.7', 1));
  });

  it('uses the socket peer when no proxy appended anything', () => {
    expect(bucket('203.0.113.7', undefined, 1)).toBe('ip4:203.0.113.7');
    expect(bucket('203.0.113.7', '', 1)).toBe('ip4:203.0.113.7');
    expect(bucket('203.0.113.7', ' , ', 1)).toBe('ip4:203.0.113.7');
  });

  it('strips ports and brackets some proxies write', () => {
    expect(bucket(proxy, '198.51.100.7:51234', 1)).toBe('ip4:198.51.100.7');
    expect(bucket(proxy, '[2001:db8:1:2::9]:443', 1)).toBe('ip6:2001:db8:1:2::/64');
  });

  it('charges an unusable entry to the hop that forwarded it, not to a shared bucket', () => {
    expect(bucket(proxy, 'unknown', 1)).toBe('via:ip4:10.0.0.1');
    expect(bucket('10.0.0.2', 'unknown', 1)).toBe('via:ip4:10.0.0.2');
    // …and never to the proxy's own bucket.
    expect(bucket(proxy, 'unknown', 1)).not.toBe(bucket(proxy));
  });
});

describe('TRUST_PROXY_HOPS=2', () => {
  it('uses the second entry from the right', () => {
    expect(bucket('10.0.0.1', '6.6.6.6, 198.51.100.7, 10.0.0.2', 2)).toBe('ip4:198.51.100.7');
    expect(bucket('10.0.0.1', 'a, b, c, 198.51.100.7, 10.0.0.2', 2)).toBe('ip4:198.51.100.7');
  });

  it('uses the leftmost entry of a chain shorter than the hops (the farthest trusted writer)', () => {
    expect(bucket('10.0.0.1', '198.51.100.7', 2)).toBe('ip4:198.51.100.7');
  });

  it('walks towards the socket when the chosen entry is unusable', () => {
    expect(bucket('10.0.0.1', 'junk, 10.0.0.2', 2)).toBe('via:ip4:10.0.0.2');
    expect(bucket('10.0.0.1', 'junk, junk', 2)).toBe('via:ip4:10.0.0.1');
  });
});

describe('address forms', () => {
  it('maps IPv4-mapped IPv6 to IPv4, dotted or hex, any case', () => {
    for (const address of ['::ffff:1.2.3.4', '::FFFF:1.2.3.4', '::ffff:102:304', '0:0:0:0:0:ffff:1.2.3.4']) {
      expect(bucket(address)).toBe('ip4:1.2.3.4');
    }
    expect(bucket('::ffff:1.2.3.4')).toBe(bucket('1.2.3.4'));
  });

  it('buckets IPv6 by its /64 in one canonical spelling', () => {
    const expected = 'ip6:2001:db8:1:2::/64';
    for (const address of [
      '2001:db8:1:2::1',
      '2001:db8:1:2:ffff:ffff:ffff:ffff',
      '2001:0DB8:0001:0002:0000:0000:0000:0001',
      '2001:db8:1:2:3:4:1.2.3.4',
    ]) {
      expect(bucket(address)).toBe(expected);
    }
    expect(bucket('2001:db8:1:3::1')).toBe('ip6:2001:db8:1:3::/64');
    expect(bucket('2001:db8::1')).toBe('ip6:2001:db8::/64');
    expect(bucket('1:0:0:2::9')).toBe('ip6:1:0:0:2::/64');
  });

  it('drops an IPv6 zone index', () => {
    expect(bucket('fe80::1%eth0')).toBe('ip6:fe80::/64');
  });

  it('gives loopback, v4 and v6, a bucket of its own', () => {
    for (const address of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1', '0:0:0:0:0:0:0:1']) {
      expect(bucket(address)).toBe(LOOPBACK_BUCKET);
    }
  });

  it('treats malformed and unspecified addresses as no address', () => {
    for (const address of ['', 'unknown', '01.2.3.4', '1.2.3', '256.1.1.1', '0.0.0.0', '::', 'localhost']) {
      expect(isNoAddressBucket(bucket(address))).toBe(true);
    }
  });
});

describe('no usable address', () => {
  it('still yields a bucket, never one shared "unknown" id', () => {
    const id = bucket(undefined);
    expect(isNoAddressBucket(id)).toBe(true);
    expect(id).toMatch(/^noaddr:[0-9a-f]{16}$/);
  });

  it('is stable for the same request and differs when the header differs', () => {
    expect(bucket(undefined, '198.51.100.7')).toBe(bucket(undefined, '198.51.100.7'));
    expect(bucket(undefined, '198.51.100.7')).not.toBe(bucket(undefined, '198.51.100.8'));
    expect(bucket(undefined, '')).not.toBe(bucket(undefined, undefined));
  });

  it('uses a trusted X-Forwarded-For entry when there is one, socket or not', () => {
    expect(bucket(undefined, '6.6.6.6, 198.51.100.7', 1)).toBe('ip4:198.51.100.7');
  });
});
