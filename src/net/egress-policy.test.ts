import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { EgressRules } from '../core/network-policy.ts';
import { allowingDomainRule, egressDecision } from './egress-policy.ts';

const rules = (r: Partial<EgressRules> = {}): EgressRules => ({
  allowOut: [],
  denyOut: [],
  internet: true,
  ...r,
});
const addr = (r: EgressRules, address: string) => egressDecision(r, { address });
const dom = (r: EgressRules, domain: string, addresses: string[]) => egressDecision(r, { domain, addresses });

test('open rules: public addresses allowed, always-denied ranges denied (v4, v6, mapped)', () => {
  const open = rules();
  for (const a of ['8.8.8.8', '192.0.2.1', '2001:db8::1', '::ffff:8.8.8.8']) {
    const d = addr(open, a);
    assert.equal(d.allowed, true, a);
    assert.match(d.reason, /internet access is on/);
  }
  assert.deepEqual(addr(open, '::ffff:8.8.8.8').addresses, ['8.8.8.8']);
  for (const [a, range] of [
    ['127.0.0.1', '127.0.0.0/8'],
    ['169.254.169.254', '169.254.0.0/16'],
    ['10.0.2.2', '10.0.0.0/8'],
    ['::1', '::1/128'],
    ['::ffff:127.0.0.1', '127.0.0.0/8'],
    ['fe80::1', 'fe80::/10'],
  ] as const) {
    const d = addr(open, a);
    assert.equal(d.allowed, false, a);
    assert.ok(d.reason.includes(`always-denied range ${range}`), d.reason);
    assert.deepEqual(d.addresses, []);
  }
});

test('internet off denies every address (v4 and v6) that no allowOut CIDR allows', () => {
  const off = rules({ internet: false });
  for (const a of ['8.8.8.8', '2001:db8::1']) {
    const d = addr(off, a);
    assert.equal(d.allowed, false, a);
    assert.match(d.reason, /internet access is off/);
  }
  const d = addr(rules({ internet: false, allowOut: ['192.0.2.0/24'] }), '192.0.2.9');
  assert.equal(d.allowed, true);
  assert.match(d.reason, /allowOut 192\.0\.2\.0\/24/);
});

test('denyOut denies what it contains; allowOut wins over denyOut', () => {
  const r = rules({ denyOut: ['198.51.100.0/24', '2001:db8::/32'] });
  assert.match(addr(r, '198.51.100.7').reason, /denied by denyOut 198\.51\.100\.0\/24/);
  assert.equal(addr(r, '198.51.100.7').allowed, false);
  assert.equal(addr(r, '2001:db8::5').allowed, false);
  assert.equal(addr(r, '198.51.101.7').allowed, true);
  const both = rules({ denyOut: ['0.0.0.0/0'], allowOut: ['198.51.100.7'] });
  assert.equal(addr(both, '198.51.100.7').allowed, true);
  assert.equal(addr(both, '198.51.100.8').allowed, false);
  assert.equal(addr(both, '2001:db8::1').allowed, true, 'denyOut 0.0.0.0/0 leaves IPv6 alone');
});

test('an always-denied range opens only to an allowOut CIDR inside it', () => {
  const exact = rules({ allowOut: ['127.0.0.1'] });
  assert.equal(addr(exact, '127.0.0.1').allowed, true);
  assert.equal(addr(exact, '::ffff:127.0.0.1').allowed, true);
  assert.equal(addr(exact, '127.0.0.2').allowed, false);
  assert.equal(addr(rules({ allowOut: ['10.0.0.0/8'] }), '10.9.9.9').allowed, true);
  assert.equal(addr(rules({ allowOut: ['fd00::/8'] }), 'fd00::5').allowed, true);
  for (const wide of ['0.0.0.0/0', '8.0.0.0/5', '::/0', '::ffff:0:0/96']) {
    const r = rules({ allowOut: [wide] });
    for (const a of ['10.0.0.1', '127.0.0.1', '169.254.169.254', '::1']) {
      const d = addr(r, a);
      assert.equal(d.allowed, false, `${wide} must not open ${a}`);
      assert.match(d.reason, /only an allowOut CIDR inside it opens it/);
    }
  }
  // Explicitly allowed beats denyOut and internet off too.
  const r = rules({ internet: false, denyOut: ['10.0.0.0/8'], allowOut: ['10.1.0.0/16'] });
  assert.equal(addr(r, '10.1.2.3').allowed, true);
  assert.equal(addr(r, '10.2.0.1').allowed, false);
});

test('an address that does not parse is denied with a reason, never thrown', () => {
  for (const a of ['', 'example.com', '1.2.3', 'fe80::1%eth0']) {
    const d = addr(rules(), a);
    assert.equal(d.allowed, false);
    assert.match(d.reason, /is not an IP address/);
  }
});

test('a domain allow wins over denyOut and internet off, for every resolved public address', () => {
  const r = rules({ internet: false, denyOut: ['0.0.0.0/0'], allowOut: ['example.com', '*.example.org'] });
  const d = dom(r, 'example.com', ['192.0.2.1', '2001:db8::1']);
  assert.equal(d.allowed, true);
  assert.deepEqual(d.addresses, ['192.0.2.1', '2001:db8::1']);
  assert.match(d.reason, /^example\.com: allowed by allowOut example\.com$/);
  assert.equal(dom(r, 'deep.api.example.org', ['192.0.2.2']).allowed, true);
  const apex = dom(r, 'example.org', ['192.0.2.2']);
  assert.equal(apex.allowed, false, 'a wildcard does not match its apex');
  assert.match(apex.reason, /^example\.org: 192\.0\.2\.2 is denied by denyOut 0\.0\.0\.0\/0$/);
  const other = dom(r, 'other.net', ['2001:db8::9']);
  assert.equal(other.allowed, false);
  assert.match(other.reason, /internet access is off/);
  assert.equal(allowingDomainRule(r, 'x.example.org'), '*.example.org');
  assert.equal(allowingDomainRule(r, 'example.net'), undefined);
});

test('a domain allow never lets a name resolve into an always-denied range', () => {
  const r = rules({ allowOut: ['example.com'] });
  const d = dom(r, 'example.com', ['127.0.0.1', '169.254.169.254', '::ffff:10.0.0.1']);
  assert.equal(d.allowed, false);
  assert.deepEqual(d.addresses, []);
  assert.match(d.reason, /^example\.com: 127\.0\.0\.1 is in the always-denied range 127\.0\.0\.0\/8/);
  // Mixed answers: only the public addresses survive, in order.
  const mixed = dom(r, 'example.com', ['10.0.0.1', '192.0.2.1', '192.0.2.1', '198.51.100.1']);
  assert.equal(mixed.allowed, true);
  assert.deepEqual(mixed.addresses, ['192.0.2.1', '198.51.100.1']);
  // An allowOut CIDR inside the range does open it, for a name as for an address.
  const opened = dom(rules({ allowOut: ['example.com', '127.0.0.5'] }), 'example.com', [
    '127.0.0.5',
    '127.0.0.6',
  ]);
  assert.deepEqual(opened.addresses, ['127.0.0.5']);
});

test('a domain without a matching rule is decided by its addresses', () => {
  const open = rules({ allowOut: ['example.com'] });
  assert.equal(dom(open, 'other.net', ['192.0.2.1']).allowed, true, 'internet on, nothing denies it');
  assert.equal(dom(open, 'other.net', ['127.0.0.1']).allowed, false);
  const cidr = rules({ internet: false, allowOut: ['192.0.2.0/24'] });
  assert.deepEqual(dom(cidr, 'other.net', ['198.51.100.1', '192.0.2.3']).addresses, ['192.0.2.3']);
  const none = dom(open, 'other.net', []);
  assert.equal(none.allowed, false);
  assert.equal(none.reason, 'other.net: it resolved to no address');
  const junk = dom(open, 'other.net', ['nonsense']);
  assert.equal(junk.allowed, false);
  assert.match(junk.reason, /"nonsense" is not an IP address/);
});

test('domain matching ignores case and a trailing dot; rules objects are reused safely', () => {
  const r = rules({ internet: false, allowOut: ['example.com'] });
  assert.equal(dom(r, 'EXAMPLE.com.', ['192.0.2.1']).allowed, true);
  assert.equal(dom(r, 'example.com', ['192.0.2.1']).allowed, true);
  const r2 = { ...r, allowOut: [] };
  assert.equal(dom(r2, 'example.com', ['192.0.2.1']).allowed, false);
});
