/**
 * Addresses, CIDRs and domain patterns for a sandbox's egress rules (issue 12): parsing with a
 * clear error, one normal form, containment, and the ranges a guest may never reach unless its
 * allow list names them. Pure; node:net's `isIP` does the syntax check, the arithmetic is ours
 * (bigint), so IPv4 and IPv6 share one code path.
 *
 * IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is always turned into its IPv4 form first, for addresses
 * and for CIDRs inside `::ffff:0:0/96`, so a rule written either way matches both spellings and a
 * mapped address cannot slip past an IPv4 deny range.
 */

import { isIP } from 'node:net';
import { invalidArgument } from './errors.ts';

export type IpFamily = 4 | 6;

/** A parsed, normalised CIDR: `base` has no host bits set. */
export interface Cidr {
  family: IpFamily;
  base: bigint;
  prefix: number;
  /** The normal form: `a.b.c.d/n` or RFC 5952 IPv6 `x::/n`. */
  text: string;
}

interface Address {
  family: IpFamily;
  value: bigint;
}

const BITS: Record<IpFamily, number> = { 4: 32, 6: 128 };

function v4ToBigInt(s: string): bigint {
  return s.split('.').reduce((acc, octet) => (acc << 8n) | BigInt(Number(octet)), 0n);
}

/** `s` has passed `isIP(s) === 6` and carries no zone. */
function v6ToBigInt(s: string): bigint {
  let text = s;
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    const v4 = v4ToBigInt(text.slice(lastColon + 1));
    text = `${text.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const [left = '', right] = text.split('::');
  const head = left === '' ? [] : left.split(':');
  const tail = right === undefined || right === '' ? [] : right.split(':');
  const groups = [...head, ...Array<string>(8 - head.length - tail.length).fill('0'), ...tail];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

/** A mapped IPv6 address (`::ffff:0:0/96`) becomes IPv4; everything else is kept. */
function unmap(a: Address): Address {
  return a.family === 6 && a.value >> 32n === 0xffffn ? { family: 4, value: a.value & 0xffffffffn } : a;
}

/** Parses an IP address as written (no brackets, no zone); undefined when `s` is not one. */
function parseRaw(s: string): Address | undefined {
  const family = isIP(s);
  if (family === 4) return { family: 4, value: v4ToBigInt(s) };
  if (family === 6 && !s.includes('%')) return { family: 6, value: v6ToBigInt(s) };
  return undefined;
}

/** parseRaw, with a mapped IPv6 address turned into IPv4. */
function parseAddress(s: string): Address | undefined {
  const a = parseRaw(s);
  return a && unmap(a);
}

function formatAddress(a: Address): string {
  if (a.family === 4) {
    return [24n, 16n, 8n, 0n].map((shift) => String((a.value >> shift) & 0xffn)).join('.');
  }
  const groups = [112n, 96n, 80n, 64n, 48n, 32n, 16n, 0n].map((shift) => (a.value >> shift) & 0xffffn);
  // RFC 5952: the longest run (at least two) of zero groups becomes "::", the first on a tie.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && groups[j] === 0n) j++;
    if (j - i > bestLen) [bestStart, bestLen] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = (gs: bigint[]): string => gs.map((g) => g.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

/**
 * The normal text of an IP address (IPv4 dotted quad, RFC 5952 IPv6, mapped IPv6 as IPv4), or
 * undefined when `s` is not an IP address.
 */
export function canonicalAddress(s: string): string | undefined {
  const a = parseAddress(s);
  return a && formatAddress(a);
}

const mask = (family: IpFamily, prefix: number): bigint => {
  const bits = BigInt(BITS[family]);
  return ((1n << bits) - 1n) ^ ((1n << (bits - BigInt(prefix))) - 1n);
};

/**
 * Parses a CIDR or a bare IP address (which becomes /32 or /128). Host bits set below the prefix
 * (`10.1.2.3/8`) are cleared, as Go's `net.ParseCIDR` (E2B's orchestrator) and nftables do: the
 * prefix length is what the writer chose, so `10.1.2.3/8` means `10.0.0.0/8`. A mapped IPv6 CIDR
 * inside `::ffff:0:0/96` becomes the IPv4 CIDR it covers. Zones (`fe80::1%eth0`), brackets,
 * leading zeros and other junk are refused: `invalid_argument` naming `field`.
 */
export function parseCidr(value: string, field = 'cidr'): Cidr {
  const slash = value.indexOf('/');
  const addrText = slash < 0 ? value : value.slice(0, slash);
  const addr0 = parseRaw(addrText);
  if (!addr0) {
    throw invalidArgument(
      field,
      `"${value}" is not an IP address or CIDR (e.g. 203.0.113.0/24, 2001:db8::/32)`,
    );
  }
  let prefix = BITS[addr0.family];
  if (slash >= 0) {
    const p = value.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > BITS[addr0.family]) {
      throw invalidArgument(
        field,
        `"${value}" has a bad prefix length "${p}" (0-${BITS[addr0.family]} for IPv${addr0.family})`,
      );
    }
    prefix = Number(p);
  }
  let addr = addr0;
  if (addr.family === 6 && prefix >= 96 && addr.value >> 32n === 0xffffn) {
    addr = unmap(addr);
    prefix -= 96;
  }
  const base = addr.value & mask(addr.family, prefix);
  return {
    family: addr.family,
    base,
    prefix,
    text: `${formatAddress({ family: addr.family, value: base })}/${prefix}`,
  };
}

/** `parseCidr(value).text`: the normal form of a CIDR or bare address. */
export const normalizeCidr = (value: string, field = 'cidr'): string => parseCidr(value, field).text;

/** True when `value` is a CIDR or bare IP address `parseCidr` accepts. */
export function isCidr(value: string): boolean {
  try {
    parseCidr(value);
    return true;
  } catch {
    return false;
  }
}

/**
 * True when `address` lies in `cidr`. A mapped IPv6 address is compared as IPv4; an address of
 * the other family, or one that does not parse, is not contained.
 */
export function contains(cidr: string | Cidr, address: string): boolean {
  const c = typeof cidr === 'string' ? parseCidr(cidr) : cidr;
  const a = parseAddress(address);
  return a !== undefined && a.family === c.family && (a.value & mask(c.family, c.prefix)) === c.base;
}

/** True when every address of `inner` lies in `outer` (same family, longer or equal prefix). */
export function cidrWithin(inner: string | Cidr, outer: string | Cidr): boolean {
  const i = typeof inner === 'string' ? parseCidr(inner) : inner;
  const o = typeof outer === 'string' ? parseCidr(outer) : outer;
  return i.family === o.family && i.prefix >= o.prefix && (i.base & mask(o.family, o.prefix)) === o.base;
}

/** A range no guest reaches unless its allowOut names a CIDR inside it (why: `label`). */
export interface DeniedRange {
  cidr: string;
  label: string;
}

/**
 * Always denied to guests (issue 12): the host's loopback, private and shared (CGNAT) space,
 * link-local (cloud metadata at 169.254.169.254), multicast and broadcast, "this network", and
 * their IPv6 counterparts. `::/128` (unspecified) is here as `0.0.0.0/8`'s twin. Mapped IPv6
 * (`::ffff:0:0/96`) needs no entry: addresses are mapped to IPv4 before any check, so
 * `::ffff:127.0.0.1` meets `127.0.0.0/8`. Host-local addresses outside these ranges (a public
 * address on a host NIC) are the nftables layer's `fib daddr type local`, not this list.
 */
export const ALWAYS_DENIED: readonly DeniedRange[] = Object.freeze([
  { cidr: '0.0.0.0/8', label: '"this network"' },
  { cidr: '10.0.0.0/8', label: 'private' },
  { cidr: '100.64.0.0/10', label: 'shared address space (CGNAT)' },
  { cidr: '127.0.0.0/8', label: 'loopback' },
  { cidr: '169.254.0.0/16', label: 'link-local (cloud metadata)' },
  { cidr: '172.16.0.0/12', label: 'private' },
  { cidr: '192.168.0.0/16', label: 'private' },
  { cidr: '224.0.0.0/4', label: 'multicast' },
  { cidr: '255.255.255.255/32', label: 'broadcast' },
  { cidr: '::/128', label: 'unspecified' },
  { cidr: '::1/128', label: 'loopback' },
  { cidr: 'fc00::/7', label: 'unique local (private)' },
  { cidr: 'fe80::/10', label: 'link-local' },
  { cidr: 'ff00::/8', label: 'multicast' },
]);

const DENIED_PARSED = ALWAYS_DENIED.map((r) => ({ ...r, parsed: parseCidr(r.cidr) }));

/** The always-denied range holding `address` (mapped IPv6 checked as IPv4), or undefined. */
export function alwaysDeniedRange(address: string): DeniedRange | undefined {
  const hit = DENIED_PARSED.find((r) => contains(r.parsed, address));
  return hit && { cidr: hit.cidr, label: hit.label };
}

// ---- domain names -------------------------------------------------------------------------

const LABEL_RE = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const MAX_NAME = 253;

/**
 * Why `name` (lowercase, no trailing dot, no wildcard) is not a host name, or undefined when it
 * is one: RFC 1035 labels as relaxed by RFC 1123 (letters, digits, inner hyphens, 1-63 chars,
 * a leading digit allowed), at most 253 chars, and a last label that is not all digits (so an
 * IPv4 literal is never read as a name). Internationalised names must be given in punycode.
 */
function hostNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'is empty';
  if (name.length > MAX_NAME) return `is longer than ${MAX_NAME} characters`;
  const labels = name.split('.');
  const bad = labels.find((l) => !LABEL_RE.test(l));
  if (bad !== undefined) {
    return bad === ''
      ? 'has an empty label'
      : `has a bad label "${bad}" (letters, digits and inner "-", 1-63 characters; punycode for non-ASCII)`;
  }
  if (/^[0-9]+$/.test(labels[labels.length - 1] ?? '')) return 'ends in an all-numeric label';
  return undefined;
}

/**
 * Checks a domain rule and returns its normal form: lowercase, one trailing dot dropped.
 * `example.com` matches that name only; `*.example.com` matches its subdomains at any depth but
 * not `example.com` itself. A bare `*`, a `*` anywhere else, IP literals and bad labels are
 * refused: `invalid_argument` naming `field`.
 */
export function parseDomainPattern(value: string, field = 'domain'): string {
  const lower = value.toLowerCase();
  const text = lower.endsWith('.') ? lower.slice(0, -1) : lower;
  if (text === '*') {
    throw invalidArgument(
      field,
      '"*" is not a domain (to allow every destination, allow 0.0.0.0/0 and ::/0)',
    );
  }
  const name = text.startsWith('*.') ? text.slice(2) : text;
  if (name.includes('*')) {
    throw invalidArgument(
      field,
      `"${value}": a wildcard is allowed only as a whole first label ("*.example.com")`,
    );
  }
  const problem = hostNameProblem(name);
  if (problem !== undefined) throw invalidArgument(field, `"${value}" is not a domain name: it ${problem}`);
  return text;
}

/**
 * The normal form of a host name from the wire (an HTTP Host, a TLS SNI): lowercase, one
 * trailing dot dropped; undefined when it is not a valid host name (wildcards included).
 */
export function canonicalHostName(host: string): string | undefined {
  const lower = host.toLowerCase();
  const text = lower.endsWith('.') ? lower.slice(0, -1) : lower;
  return hostNameProblem(text) === undefined ? text : undefined;
}

/**
 * True when `host` matches the domain rule `pattern` (both compared in normal form; a host that
 * is not a valid name matches nothing): `example.com` equal only, `*.example.com` a strict
 * subdomain at any depth.
 */
export function matchDomain(pattern: string, host: string): boolean {
  const h = canonicalHostName(host);
  if (h === undefined) return false;
  const p = pattern.toLowerCase().replace(/\.$/, '');
  if (p.startsWith('*.')) {
    const suffix = p.slice(1); // ".example.com"
    return h.length > suffix.length && h.endsWith(suffix);
  }
  return h === p;
}
