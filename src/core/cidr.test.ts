import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ALWAYS_DENIED,
  alwaysDeniedRange,
  canonicalAddress,
  canonicalHostName,
  cidrWithin,
  contains,
  isCidr,
  matchDomain,
  normalizeCidr,
  parseCidr,
  parseDomainPattern,
} from './cidr.ts';
import { KilnError } from './errors.ts';

const refusal = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof KilnError);
    assert.equal(e.code, 'invalid_argument');
    return e.message;
  }
  assert.fail('expected invalid_argument');
};

test('CIDRs and bare addresses normalise (bare -> /32 or /128, RFC 5952, lowercase)', () => {
  const cases: [string, string][] = [
    ['203.0.113.7', '203.0.113.7/32'],
    ['203.0.113.0/24', '203.0.113.0/24'],
    ['0.0.0.0/0', '0.0.0.0/0'],
    ['2001:DB8::1', '2001:db8::1/128'],
    ['2001:0db8:0000:0000:0000:0000:0000:0000/32', '2001:db8::/32'],
    ['::/0', '::/0'],
    ['::', '::/128'],
    ['::1', '::1/128'],
    ['1:0:0:1:0:0:0:1', '1:0:0:1::1/128'],
    ['1:0:0:2:0:0:3:4', '1::2:0:0:3:4/128'],
    ['1:2:3:4:5:6:7:0', '1:2:3:4:5:6:7:0/128'],
    ['fe80::/10', 'fe80::/10'],
  ];
  for (const [input, want] of cases) assert.equal(normalizeCidr(input), want, input);
});

test('host bits below the prefix are cleared (as Go net.ParseCIDR and nftables do)', () => {
  assert.equal(normalizeCidr('10.1.2.3/8'), '10.0.0.0/8');
  assert.equal(normalizeCidr('192.168.1.77/30'), '192.168.1.76/30');
  assert.equal(normalizeCidr('2001:db8::ffff/64'), '2001:db8::/64');
  assert.equal(normalizeCidr('1.2.3.4/0'), '0.0.0.0/0');
});

test('IPv4-mapped IPv6 becomes IPv4, for addresses and for CIDRs inside ::ffff:0:0/96', () => {
  assert.equal(normalizeCidr('::ffff:10.0.0.1'), '10.0.0.1/32');
  assert.equal(normalizeCidr('::ffff:10.0.0.0/104'), '10.0.0.0/8');
  assert.equal(normalizeCidr('::ffff:a00:1/128'), '10.0.0.1/32');
  assert.equal(normalizeCidr('::ffff:0:0/96'), '0.0.0.0/0');
  assert.equal(normalizeCidr('::ffff:0:0/95'), '::fffe:0:0/95', 'below /96 it stays IPv6');
  assert.equal(canonicalAddress('::ffff:127.0.0.1'), '127.0.0.1');
  assert.equal(canonicalAddress('::FFFF:7f00:1'), '127.0.0.1');
  assert.equal(canonicalAddress('::127.0.0.1'), '::7f00:1');
  assert.equal(canonicalAddress('example.com'), undefined);
});

test('junk is refused with a message naming the field and the value', () => {
  for (const bad of [
    '',
    'x',
    '1.2.3',
    '1.2.3.4.5',
    '256.0.0.1',
    '010.0.0.1',
    '0x7f.0.0.1',
    ' 1.2.3.4',
    '1.2.3.4 ',
    '[::1]',
    'fe80::1%eth0',
    '1::2::3',
    'example.com',
    '/24',
  ]) {
    const msg = refusal(() => parseCidr(bad, 'allowOut[2]'));
    assert.match(msg, /^allowOut\[2\]: /, bad);
    assert.ok(msg.includes(`"${bad}"`), msg);
    assert.equal(isCidr(bad), false, bad);
  }
  for (const bad of [
    '10.0.0.0/33',
    '10.0.0.0/-1',
    '10.0.0.0/',
    '10.0.0.0/08',
    '10.0.0.0/8/8',
    '::/129',
    '::/1a',
  ]) {
    assert.match(
      refusal(() => parseCidr(bad, 'denyOut[0]')),
      /^denyOut\[0\]: .*bad prefix length/,
      bad,
    );
  }
});

test('contains: inside, outside, edges, other family, mapped, junk', () => {
  assert.equal(contains('10.0.0.0/8', '10.255.255.255'), true);
  assert.equal(contains('10.0.0.0/8', '11.0.0.0'), false);
  assert.equal(contains('10.0.0.0/8', '9.255.255.255'), false);
  assert.equal(contains('0.0.0.0/0', '203.0.113.9'), true);
  assert.equal(contains('0.0.0.0/0', '2001:db8::1'), false);
  assert.equal(contains('::/0', '2001:db8::1'), true);
  assert.equal(contains('::/0', '::ffff:1.2.3.4'), false, 'a mapped address is IPv4');
  assert.equal(contains('127.0.0.0/8', '::ffff:127.0.0.1'), true);
  assert.equal(contains('203.0.113.7', '203.0.113.7'), true);
  assert.equal(contains('203.0.113.7', '203.0.113.8'), false);
  assert.equal(contains('2001:db8::/32', '2001:db8:ffff::1'), true);
  assert.equal(contains('2001:db8::/32', '2001:db9::1'), false);
  assert.equal(contains('10.0.0.0/8', 'not-an-ip'), false);
  assert.equal(contains('10.0.0.0/8', 'fe80::1%eth0'), false);
  assert.equal(contains(parseCidr('10.1.0.0/16'), '10.1.2.3'), true);
});

test('cidrWithin: a subset by family and prefix', () => {
  assert.equal(cidrWithin('10.1.0.0/16', '10.0.0.0/8'), true);
  assert.equal(cidrWithin('10.0.0.0/8', '10.0.0.0/8'), true);
  assert.equal(cidrWithin('0.0.0.0/0', '10.0.0.0/8'), false);
  assert.equal(cidrWithin('8.0.0.0/5', '10.0.0.0/8'), false);
  assert.equal(cidrWithin('11.0.0.0/16', '10.0.0.0/8'), false);
  assert.equal(cidrWithin('fd00::/8', 'fc00::/7'), true);
  assert.equal(cidrWithin('fd00::/8', '10.0.0.0/8'), false);
});

test('ALWAYS_DENIED holds every range issue 12 names, each normalised', () => {
  const cidrs = ALWAYS_DENIED.map((r) => r.cidr);
  for (const want of [
    '127.0.0.0/8',
    '10.0.0.0/8',
    '100.64.0.0/10',
    '169.254.0.0/16',
    '172.16.0.0/12',
    '192.168.0.0/16',
    '224.0.0.0/4',
    '0.0.0.0/8',
    '255.255.255.255/32',
    '::1/128',
    'fc00::/7',
    'fe80::/10',
    'ff00::/8',
  ]) {
    assert.ok(cidrs.includes(want), want);
  }
  for (const c of cidrs) assert.equal(normalizeCidr(c), c);
});

test('alwaysDeniedRange: every denied range by a sample, mapped forms, and public addresses not', () => {
  const denied: [string, string][] = [
    ['127.0.0.1', '127.0.0.0/8'],
    ['127.255.255.254', '127.0.0.0/8'],
    ['10.0.2.2', '10.0.0.0/8'],
    ['100.64.0.1', '100.64.0.0/10'],
    ['100.127.255.255', '100.64.0.0/10'],
    ['169.254.169.254', '169.254.0.0/16'],
    ['172.16.0.1', '172.16.0.0/12'],
    ['172.31.255.255', '172.16.0.0/12'],
    ['192.168.1.1', '192.168.0.0/16'],
    ['224.0.0.251', '224.0.0.0/4'],
    ['239.255.255.250', '224.0.0.0/4'],
    ['0.0.0.0', '0.0.0.0/8'],
    ['255.255.255.255', '255.255.255.255/32'],
    ['::', '::/128'],
    ['::1', '::1/128'],
    ['fd12:3456::1', 'fc00::/7'],
    ['fe80::1', 'fe80::/10'],
    ['ff02::1', 'ff00::/8'],
    ['::ffff:127.0.0.1', '127.0.0.0/8'],
    ['::ffff:a9fe:a9fe', '169.254.0.0/16'],
    ['::ffff:0.0.0.0', '0.0.0.0/8'],
  ];
  for (const [addr, range] of denied) assert.equal(alwaysDeniedRange(addr)?.cidr, range, addr);
  for (const ok of [
    '8.8.8.8',
    '100.63.255.255',
    '100.128.0.0',
    '172.15.255.255',
    '172.32.0.0',
    '192.0.2.1',
    '198.51.100.7',
    '2001:db8::1',
    '2606:4700::1111',
    '::ffff:8.8.8.8',
    '240.0.0.1',
  ]) {
    assert.equal(alwaysDeniedRange(ok), undefined, ok);
  }
  assert.equal(alwaysDeniedRange('junk'), undefined);
});

test('domain patterns: normal form, wildcards, and refusals with reasons', () => {
  assert.equal(parseDomainPattern('Example.COM'), 'example.com');
  assert.equal(parseDomainPattern('example.com.'), 'example.com');
  assert.equal(parseDomainPattern('*.Example.com'), '*.example.com');
  assert.equal(parseDomainPattern('a-b.x1.example'), 'a-b.x1.example');
  assert.equal(parseDomainPattern('1password.com'), '1password.com');
  assert.equal(parseDomainPattern('xn--bcher-kva.example'), 'xn--bcher-kva.example');
  assert.equal(parseDomainPattern('localhost'), 'localhost');
  assert.equal(parseDomainPattern(`${'a'.repeat(63)}.com`), `${'a'.repeat(63)}.com`);
  const bad: [string, RegExp][] = [
    ['*', /allow 0.0.0.0\/0/],
    ['', /is empty/],
    ['.', /is empty/],
    ['*.', /allow 0.0.0.0\/0/],
    ['*..', /is empty/],
    ['**.example.com', /wildcard/],
    ['a.*.example.com', /wildcard/],
    ['*example.com', /wildcard/],
    ['example.*', /wildcard/],
    ['exa mple.com', /bad label/],
    ['-example.com', /bad label "-example"/],
    ['example-.com', /bad label/],
    ['ex_ample.com', /bad label/],
    ['bücher.example', /punycode/],
    ['a..b', /empty label/],
    ['.example.com', /empty label/],
    [`${'a'.repeat(64)}.com`, /bad label/],
    [`${'a.'.repeat(127)}com`, /longer than 253/],
    ['1.2.3.4', /all-numeric/],
    ['example.123', /all-numeric/],
    ['example.com/24', /bad label/],
    ['example.com:80', /bad label/],
  ];
  for (const [input, why] of bad) {
    const msg = refusal(() => parseDomainPattern(input, 'allowOut[0]'));
    assert.match(msg, /^allowOut\[0\]: /, input);
    assert.match(msg, why, `${input}: ${msg}`);
  }
});

test('matchDomain: exact names, wildcards at any depth but not the apex, case and trailing dot', () => {
  assert.equal(matchDomain('example.com', 'example.com'), true);
  assert.equal(matchDomain('example.com', 'EXAMPLE.com.'), true);
  assert.equal(matchDomain('example.com', 'www.example.com'), false);
  assert.equal(matchDomain('example.com', 'notexample.com'), false);
  assert.equal(matchDomain('*.example.com', 'www.example.com'), true);
  assert.equal(matchDomain('*.example.com', 'a.b.c.example.com'), true);
  assert.equal(matchDomain('*.example.com', 'example.com'), false);
  assert.equal(matchDomain('*.example.com', 'badexample.com'), false);
  assert.equal(matchDomain('*.example.com', 'www.example.com.evil.net'), false);
  assert.equal(matchDomain('*.example.com', 'WWW.Example.Com'), true);
  assert.equal(matchDomain('*.example.com', '*.example.com'), false, 'a wildcard host is not a name');
  assert.equal(matchDomain('example.com', ''), false);
  assert.equal(matchDomain('example.com', 'exa mple.com'), false);
});

test('canonicalHostName: wire names', () => {
  assert.equal(canonicalHostName('WWW.Example.com.'), 'www.example.com');
  assert.equal(canonicalHostName('1.2.3.4'), undefined);
  assert.equal(canonicalHostName('a..b'), undefined);
  assert.equal(canonicalHostName('a\0b.com'), undefined);
});
