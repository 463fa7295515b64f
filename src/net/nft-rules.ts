/**
 * The nftables rules of sandbox networks, as scripts for `nft -f -` (pure: rendering only; see
 * slots.ts for applying them). Each script replaces its table in one transaction, so a rule set
 * is swapped atomically and repeating a script leaves exactly one copy.
 *
 * Inside a sandbox namespace (table `inet kiln`): QEMU's user-mode network stack turns the guest's
 * connections into sockets of the QEMU process, so the namespace's *output* hook sees every
 * connection the guest makes. Order: replies pass; the egress proxy and DNS (when configured)
 * pass; addresses local to the namespace are refused; allowed CIDRs that lie inside an
 * always-denied range pass (naming such a range explicitly opens it, 0.0.0.0/0 does not: the
 * same rule as egress-policy.ts); the always-denied ranges are refused; the other allowed CIDRs
 * pass; the denied CIDRs and, with internet off, everything else are refused. Refused TCP gets a
 * reset (QEMU's user-net then resets the guest's connection, so it fails at once; an ICMP error
 * would leave the guest retrying its SYN until it times out), anything else an ICMP error.
 *
 * On the host (table `inet kiln_net_<tag>`): sandboxes reach no host address (input), no other
 * sandbox (forward), and leave through NAT; only kilnd's uid connects to the namespaces' forwarded
 * guest ports.
 */
import { cidrWithin, isCidr } from '../core/cidr.ts';
import type { EgressRules } from '../core/network-policy.ts';
import { VOLUME_GUEST_ADDR, VOLUME_GUEST_PORT } from '../core/volume-route.ts';
import { HOST_IF_PREFIX, NS_TABLE } from './names.ts';

/** What a namespace's rules need besides the sandbox's own egress rules. */
export interface NsRuleContext {
  /** The host end of the slot's veth (where the egress proxy listens). */
  hostAddr: string;
  /** Always-denied ranges (IPv4 and IPv6 CIDRs). */
  alwaysDenied: readonly string[];
  /**
   * The host's own addresses (IPv4) now: refused in the namespace, so a connection to one fails
   * at once. (The host table refuses every host address anyway, including ones added later, but
   * a refusal from the host arrives after QEMU's connect returned, and user-net then lets the
   * guest's connection time out instead of resetting it.)
   */
  hostLocal?: readonly string[];
  /** The resolver guests' DNS queries are sent to (IPv4), if any. */
  dns?: string | undefined;
  /** The egress proxy's ports (HTTP, TLS) on `hostAddr`, when kilnd runs one. */
  proxy?: { http: number; tls: number } | undefined;
  /** kilnd's volume listeners' ports on `hostAddr`, by mount index (see VOLUME_GUEST_PORT). */
  volumes?: readonly number[] | undefined;
}

const isV6 = (c: string): boolean => c.includes(':');

function set(name: string, type: 'ipv4_addr' | 'ipv6_addr', elements: readonly string[]): string {
  const els = elements.length > 0 ? ` elements = { ${elements.join(', ')} };` : '';
  return `\tset ${name} { type ${type}; flags interval; auto-merge;${els} }`;
}

/** Sets `<name>4` and `<name>6` holding the IPv4 and the IPv6 ones of `cidrs`. */
function setPair(name: string, cidrs: readonly string[]): string[] {
  return [
    set(
      `${name}4`,
      'ipv4_addr',
      cidrs.filter((x) => !isV6(x)),
    ),
    set(`${name}6`, 'ipv6_addr', cidrs.filter(isV6)),
  ];
}

const REJECT = 'reject with icmpx admin-prohibited';
const REFUSE = 'jump refuse';

/**
 * The namespace's NAT rules and the first filter rules: replies, DNS to the sandboxes' resolver,
 * and (with domain rules) TCP 80/443 to the egress proxy on the slot's gateway.
 */
function redirects(c: NsRuleContext, proxy: NsRuleContext['proxy']): { nat: string[]; out: string[] } {
  const nat: string[] = [];
  const out: string[] = ['ct state established,related accept'];
  if (c.dns) {
    nat.push(`meta nfproto ipv4 meta l4proto { tcp, udp } th dport 53 dnat ip to ${c.dns}`);
    out.push(`ip daddr ${c.dns} meta l4proto { tcp, udp } th dport 53 accept`);
  }
  if (proxy) {
    // An allowed CIDR goes out directly; every other connection to 80/443 meets the proxy.
    for (const [port, to] of [
      [80, proxy.http],
      [443, proxy.tls],
    ] as const)
      nat.push(
        `meta nfproto ipv4 tcp dport ${port} ip daddr != @allow_denied4 ip daddr != @allow4 dnat ip to ${c.hostAddr}:${to}`,
      );
    out.push(`ip daddr ${c.hostAddr} tcp dport { ${proxy.http}, ${proxy.tls} } accept`);
  }
  const vols = c.volumes ?? [];
  vols.forEach((port, i) =>
    nat.push(
      `ip daddr ${VOLUME_GUEST_ADDR} tcp dport ${VOLUME_GUEST_PORT + i} dnat ip to ${c.hostAddr}:${port}`,
    ),
  );
  if (vols.length > 0) out.push(`ip daddr ${c.hostAddr} tcp dport { ${vols.join(', ')} } accept`);
  return { nat, out };
}

/** The script that (re)defines a sandbox namespace's table for `rules`. */
export function namespaceRuleset(rules: EgressRules, c: NsRuleContext): string {
  const cidrs = rules.allowOut.filter(isCidr);
  const inDenied = (x: string): boolean =>
    c.alwaysDenied.some((d) => isV6(d) === isV6(x) && cidrWithin(x, d));
  const allowDenied = cidrs.filter(inDenied);
  const allow = cidrs.filter((x) => !inDenied(x));
  const domains = rules.allowOut.some((e) => !isCidr(e));
  const deny = rules.denyOut.filter(isCidr);
  const { nat, out } = redirects(c, domains ? c.proxy : undefined);
  out.push(
    `fib daddr type local ${REFUSE}`,
    `ip daddr @host4 ${REFUSE}`,
    'ip daddr @allow_denied4 accept',
    'ip6 daddr @allow_denied6 accept',
    `ip daddr @always4 ${REFUSE}`,
    `ip6 daddr @always6 ${REFUSE}`,
    'ip daddr @allow4 accept',
    'ip6 daddr @allow6 accept',
    `ip daddr @deny4 ${REFUSE}`,
    `ip6 daddr @deny6 ${REFUSE}`,
  );
  if (!rules.internet) out.push(REFUSE);
  return [
    `table inet ${NS_TABLE} {}`,
    `delete table inet ${NS_TABLE}`,
    `table inet ${NS_TABLE} {`,
    set('host4', 'ipv4_addr', c.hostLocal ?? []),
    ...setPair('allow_denied', allowDenied),
    ...setPair('allow', allow),
    ...setPair('deny', deny),
    ...setPair('always', c.alwaysDenied),
    '\tchain refuse {',
    '\t\tmeta l4proto tcp reject with tcp reset',
    `\t\t${REJECT}`,
    '\t}',
    '\tchain nat_output {',
    '\t\ttype nat hook output priority -100; policy accept;',
    ...nat.map((r) => `\t\t${r}`),
    '\t}',
    '\tchain output {',
    '\t\ttype filter hook output priority filter; policy accept;',
    ...out.map((r) => `\t\t${r}`),
    '\t}',
    '}',
    '',
  ].join('\n');
}

/** What the host table of an instance needs. */
export interface HostRuleContext {
  table: string;
  tag: string;
  /** The instance's address block (x.y.z.0/22). */
  block: string;
  /** kilnd's uid: the only one that may connect to the namespaces' forwarded guest ports. */
  uid: number;
  /** The egress proxy's ports, reachable from the sandboxes. */
  proxy?: { http: number; tls: number } | undefined;
  /** kilnd's volume listeners' ports, reachable from the sandboxes. */
  volumes?: readonly number[] | undefined;
  /**
   * kiln turned IP forwarding on (it was off): forwarding between interfaces that are not kiln's
   * is dropped, so the host routes nothing it did not route before.
   */
  guardForwarding: boolean;
}

/** The script that (re)defines an instance's host table. */
export function hostRuleset(h: HostRuleContext): string {
  if (!/^kiln_net_[0-9a-f]{6}$/.test(h.table)) throw new TypeError(`bad table name "${h.table}"`);
  if (!Number.isInteger(h.uid) || h.uid < 0) throw new TypeError('uid must be a non-negative integer');
  const mine = `"${HOST_IF_PREFIX}${h.tag}*"`;
  const any = `"${HOST_IF_PREFIX}*"`;
  const input = [`iifname ${mine} ct state established,related accept`];
  if (h.proxy)
    input.push(
      `iifname ${mine} tcp dport { ${h.proxy.http}, ${h.proxy.tls} } accept`,
      // The proxy listens on every address: only sandboxes reach it.
      `iifname != ${any} iifname != "lo" tcp dport { ${h.proxy.http}, ${h.proxy.tls} } drop`,
    );
  if (h.volumes && h.volumes.length > 0) {
    const ports = h.volumes.join(', ');
    input.push(
      `iifname ${mine} tcp dport { ${ports} } accept`,
      `iifname != ${any} iifname != "lo" tcp dport { ${ports} } drop`,
    );
  }
  input.push(`iifname ${mine} meta l4proto tcp reject with tcp reset`, `iifname ${mine} ${REJECT}`);
  const forward = [
    `iifname ${any} oifname ${any} ${REJECT}`,
    `oifname ${mine} ct state established,related accept`,
    `oifname ${mine} ${REJECT}`,
    ...(h.guardForwarding ? [`iifname != ${any} oifname != ${any} drop`] : []),
  ];
  const chain = (name: string, hook: string, rules: string[]): string[] => [
    `\tchain ${name} {`,
    `\t\t${hook}`,
    ...rules.map((r) => `\t\t${r}`),
    '\t}',
  ];
  return [
    `table inet ${h.table} {}`,
    `delete table inet ${h.table}`,
    `table inet ${h.table} {`,
    ...chain('input', 'type filter hook input priority filter; policy accept;', input),
    ...chain('forward', 'type filter hook forward priority filter; policy accept;', forward),
    ...chain('postrouting', 'type nat hook postrouting priority srcnat; policy accept;', [
      `ip saddr ${h.block} oifname != ${any} masquerade`,
    ]),
    ...chain('output', 'type filter hook output priority filter; policy accept;', [
      `ip daddr ${h.block} tcp flags & (syn | ack) == syn meta skuid != ${h.uid} reject with tcp reset comment "kiln: only kilnd connects to guest ports"`,
    ]),
    '}',
    '',
  ].join('\n');
}
