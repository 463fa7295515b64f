/**
 * The rendered nftables scripts: the order of a namespace's output rules (what is refused before
 * what is allowed), where each CIDR lands, and that nft itself accepts every script (`nft -c`:
 * checked, not applied; a namespace's script inside a throwaway namespace this test makes).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ALWAYS_DENIED } from '../core/cidr.ts';
import { run } from '../core/exec.ts';
import type { EgressRules } from '../core/network-policy.ts';
import { hostRuleset, namespaceRuleset, type NsRuleContext } from './nft-rules.ts';

const ALWAYS = ALWAYS_DENIED.map((r) => r.cidr);
const CTX: NsRuleContext = { hostAddr: '10.231.4.1', alwaysDenied: ALWAYS, hostLocal: ['10.0.2.15'] };
const FULL: NsRuleContext = { ...CTX, dns: '192.0.2.53', proxy: { http: 40080, tls: 40443 } };
const rules = (r: Partial<EgressRules> = {}): EgressRules => ({
  allowOut: [],
  denyOut: [],
  internet: true,
  ...r,
});

/** The rules of chain `name` of a rendered script, in order, without indentation. */
function chain(script: string, name: string): string[] {
  const lines = script.split('\n').map((l) => l.trim());
  const start = lines.indexOf(`chain ${name} {`);
  assert.ok(start >= 0, `chain ${name} in:\n${script}`);
  const end = lines.indexOf('}', start);
  return lines.slice(start + 1, end).filter((l) => !l.startsWith('type '));
}

/** The elements of set `name` of a rendered script. */
function elements(script: string, name: string): string[] {
  const line = script.split('\n').find((l) => l.trim().startsWith(`set ${name} {`));
  assert.ok(line, `set ${name}`);
  const m = /elements = \{ ([^}]*) \}/.exec(line);
  return m?.[1] ? m[1].split(', ') : [];
}

const at = (rs: string[], rule: string): number => {
  const i = rs.indexOf(rule);
  assert.ok(i >= 0, `rule "${rule}" in:\n${rs.join('\n')}`);
  return i;
};

describe('namespaceRuleset', () => {
  it('refuses local and always-denied ranges before it accepts the allowed CIDRs', () => {
    const out = chain(namespaceRuleset(rules({ allowOut: ['192.0.2.0/24'] }), CTX), 'output');
    assert.equal(out[0], 'ct state established,related accept', 'replies pass first');
    const order = [
      'fib daddr type local jump refuse',
      'ip daddr @host4 jump refuse',
      'ip daddr @allow_denied4 accept',
      'ip6 daddr @allow_denied6 accept',
      'ip daddr @always4 jump refuse',
      'ip6 daddr @always6 jump refuse',
      'ip daddr @allow4 accept',
      'ip6 daddr @allow6 accept',
      'ip daddr @deny4 jump refuse',
      'ip6 daddr @deny6 jump refuse',
    ].map((r) => at(out, r));
    assert.deepEqual(
      order,
      [...order].sort((a, b) => a - b),
      'in this order',
    );
    assert.equal(out.at(-1), 'ip6 daddr @deny6 jump refuse', 'internet on: nothing after the deny sets');
  });

  it('an allowed CIDR inside an always-denied range goes to allow_denied; others to allow', () => {
    const s = namespaceRuleset(
      rules({
        allowOut: ['10.1.2.0/24', '192.0.2.0/24', '169.254.169.254/32', 'fd00::/8', '2001:db8::/32'],
        denyOut: ['198.51.100.0/24', '2001:db8:1::/48'],
      }),
      CTX,
    );
    assert.deepEqual(elements(s, 'allow_denied4'), ['10.1.2.0/24', '169.254.169.254/32']);
    assert.deepEqual(elements(s, 'allow_denied6'), ['fd00::/8']);
    assert.deepEqual(elements(s, 'allow4'), ['192.0.2.0/24']);
    assert.deepEqual(elements(s, 'allow6'), ['2001:db8::/32']);
    assert.deepEqual(elements(s, 'deny4'), ['198.51.100.0/24']);
    assert.deepEqual(elements(s, 'deny6'), ['2001:db8:1::/48']);
    assert.deepEqual(elements(s, 'host4'), ['10.0.2.15']);
    assert.deepEqual(
      [...elements(s, 'always4'), ...elements(s, 'always6')],
      ALWAYS,
      'every always-denied range, by family',
    );
  });

  it('0.0.0.0/0 and ::/0 do not open the private ranges: they land after the always-denied refusal', () => {
    const s = namespaceRuleset(rules({ allowOut: ['0.0.0.0/0', '::/0'], internet: false }), CTX);
    assert.deepEqual(elements(s, 'allow_denied4'), []);
    assert.deepEqual(elements(s, 'allow_denied6'), []);
    assert.deepEqual(elements(s, 'allow4'), ['0.0.0.0/0']);
    assert.deepEqual(elements(s, 'allow6'), ['::/0']);
  });

  it('internet off ends the output chain with a refusal of everything else', () => {
    const out = chain(namespaceRuleset(rules({ internet: false }), CTX), 'output');
    assert.equal(out.at(-1), 'jump refuse');
    assert.equal(out.at(-2), 'ip6 daddr @deny6 jump refuse');
    const refuse = chain(namespaceRuleset(rules(), CTX), 'refuse');
    assert.deepEqual(refuse, [
      'meta l4proto tcp reject with tcp reset',
      'reject with icmpx admin-prohibited',
    ]);
  });

  it('DNS rules only with a resolver; proxy redirects only with a proxy AND a domain rule', () => {
    const none = namespaceRuleset(rules({ allowOut: ['example.com'] }), CTX);
    assert.deepEqual(chain(none, 'nat_output'), [], 'no resolver, no proxy: no NAT');
    assert.ok(!none.includes('dport 53'));

    const cidrsOnly = namespaceRuleset(rules({ allowOut: ['192.0.2.0/24'] }), FULL);
    assert.deepEqual(chain(cidrsOnly, 'nat_output'), [
      'meta nfproto ipv4 meta l4proto { tcp, udp } th dport 53 dnat ip to 192.0.2.53',
    ]);
    const out = chain(cidrsOnly, 'output');
    assert.equal(out[1], 'ip daddr 192.0.2.53 meta l4proto { tcp, udp } th dport 53 accept');
    assert.ok(!cidrsOnly.includes('40080'), 'no domain rule: no proxy');

    const domains = namespaceRuleset(rules({ allowOut: ['*.example.com'], internet: false }), FULL);
    assert.deepEqual(chain(domains, 'nat_output').slice(1), [
      'meta nfproto ipv4 tcp dport 80 ip daddr != @allow_denied4 ip daddr != @allow4 dnat ip to 10.231.4.1:40080',
      'meta nfproto ipv4 tcp dport 443 ip daddr != @allow_denied4 ip daddr != @allow4 dnat ip to 10.231.4.1:40443',
    ]);
    const dout = chain(domains, 'output');
    const proxy = at(dout, 'ip daddr 10.231.4.1 tcp dport { 40080, 40443 } accept');
    assert.ok(proxy < at(dout, 'fib daddr type local jump refuse'), 'the proxy passes before any refusal');
    assert.ok(!/example\.com/.test(domains), 'domain names never reach nftables');
  });

  it('volumes: guest port 20490+i goes to listener i on the host address, accepted before the host refusals', () => {
    const s = namespaceRuleset(rules({ internet: false }), { ...CTX, volumes: [41000, 41007] });
    assert.deepEqual(
      chain(s, 'nat_output').filter((r) => r.includes('192.0.2.1')),
      [
        'ip daddr 192.0.2.1 tcp dport 20490 dnat ip to 10.231.4.1:41000',
        'ip daddr 192.0.2.1 tcp dport 20491 dnat ip to 10.231.4.1:41007',
      ],
    );
    const out = chain(s, 'output');
    const accept = at(out, 'ip daddr 10.231.4.1 tcp dport { 41000, 41007 } accept');
    assert.ok(accept < at(out, 'fib daddr type local jump refuse'));
    assert.ok(accept < at(out, 'ip daddr @host4 jump refuse'));
    assert.ok(!namespaceRuleset(rules(), CTX).includes('20490'));
  });

  it('replaces its table in one script (create-if-missing, delete, define)', () => {
    const s = namespaceRuleset(rules(), CTX).split('\n');
    assert.deepEqual(s.slice(0, 3), ['table inet kiln {}', 'delete table inet kiln', 'table inet kiln {']);
  });
});

describe('hostRuleset', () => {
  const HOST = {
    table: 'kiln_net_abc123',
    tag: 'abc123',
    block: '10.231.4.0/22',
    uid: 0,
    guardForwarding: false,
  };

  it('guards input and forward of the instance links, masquerades its block, keeps guest ports to kilnd', () => {
    const s = hostRuleset({ ...HOST, proxy: { http: 40080, tls: 40443 } });
    const input = chain(s, 'input');
    assert.equal(input[0], 'iifname "knabc123*" ct state established,related accept');
    assert.ok(
      at(input, 'iifname "knabc123*" tcp dport { 40080, 40443 } accept') <
        at(input, 'iifname "knabc123*" meta l4proto tcp reject with tcp reset'),
    );
    assert.equal(input.at(-1), 'iifname "knabc123*" reject with icmpx admin-prohibited');
    assert.equal(chain(s, 'forward')[0], 'iifname "kn*" oifname "kn*" reject with icmpx admin-prohibited');
    assert.deepEqual(chain(s, 'postrouting'), ['ip saddr 10.231.4.0/22 oifname != "kn*" masquerade']);
    assert.match(chain(s, 'output')[0] ?? '', /^ip daddr 10\.231\.4\.0\/22 .* meta skuid != 0 reject/);
  });

  it('no proxy: no proxy ports; guarded forwarding drops what is not kiln', () => {
    const plain = hostRuleset(HOST);
    assert.ok(!plain.includes('dport {'));
    assert.ok(!chain(plain, 'forward').some((r) => r.endsWith(' drop')));
    const guarded = hostRuleset({ ...HOST, guardForwarding: true });
    assert.equal(chain(guarded, 'forward').at(-1), 'iifname != "kn*" oifname != "kn*" drop');
  });

  it('volume ports: open from the instance links, dropped from any other interface but lo', () => {
    const input = chain(hostRuleset({ ...HOST, volumes: [41000, 41001] }), 'input');
    const ok = at(input, 'iifname "knabc123*" tcp dport { 41000, 41001 } accept');
    assert.ok(ok < at(input, 'iifname "knabc123*" meta l4proto tcp reject with tcp reset'));
    assert.ok(at(input, 'iifname != "kn*" iifname != "lo" tcp dport { 41000, 41001 } drop') > ok);
  });

  it('refuses a bad table name or uid', () => {
    assert.throws(() => hostRuleset({ ...HOST, table: 'kiln_net_x; flush ruleset' }), /bad table name/);
    assert.throws(() => hostRuleset({ ...HOST, uid: -1 }), /uid/);
  });
});

describe('nft accepts every rendered script (nft -c)', () => {
  const ns = `kilntest-nft-${process.pid}`;
  before(async () => {
    await run('ip', ['netns', 'add', ns]);
  });
  after(async () => {
    await run('ip', ['netns', 'del', ns]);
  });
  const check = async (script: string, inNs: boolean): Promise<void> => {
    const [cmd, args] = inNs
      ? ['nsenter', [`--net=/run/netns/${ns}`, 'nft', '-c', '-f', '-']]
      : ['nft', ['-c', '-f', '-']];
    await run(cmd, args, { input: script }).catch((e: unknown) => {
      assert.fail(`nft -c refused:\n${script}\n${String(e)}`);
    });
  };

  const cases: [string, EgressRules, NsRuleContext][] = [
    ['closed (a slot made ahead)', rules({ internet: false }), { ...CTX, hostLocal: [] }],
    ['open, no resolver, no proxy', rules(), CTX],
    ['closed, with volume listeners', rules({ internet: false }), { ...CTX, volumes: [41000, 41001, 41002] }],
    [
      'every set filled, overlapping entries, resolver and proxy',
      rules({
        allowOut: [
          '0.0.0.0/0',
          '::/0',
          '10.0.0.0/8',
          '10.1.0.0/16',
          '169.254.169.254/32',
          'fd00::/8',
          '192.0.2.7/32',
          '*.example.com',
          'example.org',
        ],
        denyOut: ['198.51.100.0/24', '198.51.100.128/25', '2001:db8::/32'],
        internet: false,
      }),
      FULL,
    ],
  ];
  it('(the check itself refuses a broken script)', async () => {
    await assert.rejects(
      run('nsenter', [`--net=/run/netns/${ns}`, 'nft', '-c', '-f', '-'], {
        input: namespaceRuleset(rules(), CTX).replace('jump refuse', 'jump nowhere'),
      }),
    );
  });
  for (const [what, r, c] of cases)
    it(`namespace script: ${what}`, async () => {
      await check(namespaceRuleset(r, c), true);
    });

  it('host script, with and without proxy and forwarding guard', async () => {
    const h = { table: 'kiln_net_0ff1ce', tag: '0ff1ce', block: '10.231.252.0/22', uid: 1000 };
    await check(hostRuleset({ ...h, guardForwarding: false }), false);
    await check(hostRuleset({ ...h, guardForwarding: true, proxy: { http: 1, tls: 65535 } }), false);
    await check(hostRuleset({ ...h, guardForwarding: false, volumes: [41000, 41001] }), false);
  });
});
