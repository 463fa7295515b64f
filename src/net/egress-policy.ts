/**
 * The one function that says whether a sandbox may reach a destination (issue 12), with E2B's
 * semantics. The nftables rules and the egress proxy both follow it; its tests are the spec.
 *
 * For an address, in order:
 *  1. an address in an always-denied range (core/cidr ALWAYS_DENIED) is denied unless an allowOut
 *     CIDR that contains it lies inside that range (names it explicitly: `10.0.0.0/8` or
 *     `10.1.2.3` open their part of 10/8; `0.0.0.0/0` opens none of it);
 *  2. an allowOut CIDR containing it allows it (allow wins over deny);
 *  3. a denyOut CIDR containing it denies it;
 *  4. `internet: false` denies it (as denyOut 0.0.0.0/0 and ::/0 would);
 *  5. otherwise it is allowed.
 * For a domain with the addresses it resolved to: a domain allowOut rule matching the name allows
 * every resolved address except those in an always-denied range (rule 1 still applies: a domain
 * allow never lets a name resolve into a denied range); without a matching domain rule each
 * address is decided as above. The destination is allowed when at least one address is.
 */

import {
  alwaysDeniedRange,
  canonicalAddress,
  cidrWithin,
  contains,
  matchDomain,
  parseCidr,
  type Cidr,
} from '../core/cidr.ts';
import type { EgressRules } from '../core/network-policy.ts';

export type EgressDestination = { address: string } | { domain: string; addresses: readonly string[] };

export interface EgressDecision {
  allowed: boolean;
  /** Why, for a person: the rule or range that decided. */
  reason: string;
  /** The allowed addresses, in the order given (an address destination: itself, normalised). */
  addresses: string[];
}

interface Compiled {
  allowCidrs: Cidr[];
  allowDomains: string[];
  denyCidrs: Cidr[];
  internet: boolean;
}

const compiledCache = new WeakMap<EgressRules, Compiled>();

/** Splits allowOut into CIDRs and domains once per rules object (entries are normalised). */
function compile(rules: EgressRules): Compiled {
  const hit = compiledCache.get(rules);
  if (hit) return hit;
  const allowCidrs: Cidr[] = [];
  const allowDomains: string[] = [];
  for (const entry of rules.allowOut) {
    const cidr = tryCidr(entry);
    if (cidr) allowCidrs.push(cidr);
    else allowDomains.push(entry.toLowerCase());
  }
  const denyCidrs = rules.denyOut.map((e) => tryCidr(e)).filter((c): c is Cidr => c !== undefined);
  const compiled = { allowCidrs, allowDomains, denyCidrs, internet: rules.internet };
  compiledCache.set(rules, compiled);
  return compiled;
}

function tryCidr(entry: string): Cidr | undefined {
  try {
    return parseCidr(entry);
  } catch {
    return undefined;
  }
}

/** The allowOut domain rule matching `host`, or undefined. */
export function allowingDomainRule(rules: EgressRules, host: string): string | undefined {
  return compile(rules).allowDomains.find((d) => matchDomain(d, host));
}

interface AddressVerdict {
  allowed: boolean;
  reason: string;
}

function decideAddress(c: Compiled, address: string, viaDomain: string | undefined): AddressVerdict {
  const range = alwaysDeniedRange(address);
  if (range) {
    const opener = c.allowCidrs.find((a) => contains(a, address) && cidrWithin(a, range.cidr));
    if (opener) return { allowed: true, reason: `${address} is allowed by allowOut ${opener.text}` };
    return {
      allowed: false,
      reason: `${address} is in the always-denied range ${range.cidr} (${range.label}); only an allowOut CIDR inside it opens it`,
    };
  }
  if (viaDomain !== undefined) return { allowed: true, reason: `allowed by allowOut ${viaDomain}` };
  const allow = c.allowCidrs.find((a) => contains(a, address));
  if (allow) return { allowed: true, reason: `${address} is allowed by allowOut ${allow.text}` };
  const deny = c.denyCidrs.find((d) => contains(d, address));
  if (deny) return { allowed: false, reason: `${address} is denied by denyOut ${deny.text}` };
  if (!c.internet)
    return { allowed: false, reason: `${address}: internet access is off and no allowOut rule allows it` };
  return { allowed: true, reason: `${address}: internet access is on and no rule denies it` };
}

/**
 * Decides whether `rules` let a sandbox reach `dest` (see the module doc for the order). Pure and
 * total: an unparsable address is denied with a reason, never thrown.
 */
export function egressDecision(rules: EgressRules, dest: EgressDestination): EgressDecision {
  const c = compile(rules);
  if ('address' in dest) {
    const address = canonicalAddress(dest.address);
    if (address === undefined) {
      return { allowed: false, reason: `"${dest.address}" is not an IP address`, addresses: [] };
    }
    const v = decideAddress(c, address, undefined);
    return { ...v, addresses: v.allowed ? [address] : [] };
  }
  const viaDomain = c.allowDomains.find((d) => matchDomain(d, dest.domain));
  const allowed: string[] = [];
  let firstAllow: string | undefined;
  let firstDeny: string | undefined;
  for (const raw of dest.addresses) {
    const address = canonicalAddress(raw);
    const v: AddressVerdict =
      address === undefined
        ? { allowed: false, reason: `"${raw}" is not an IP address` }
        : decideAddress(c, address, viaDomain);
    if (v.allowed && address !== undefined) {
      if (!allowed.includes(address)) allowed.push(address);
      firstAllow ??= v.reason;
    } else firstDeny ??= v.reason;
  }
  if (firstAllow !== undefined)
    return { allowed: true, reason: `${dest.domain}: ${firstAllow}`, addresses: allowed };
  const why = firstDeny ?? 'it resolved to no address';
  return { allowed: false, reason: `${dest.domain}: ${why}`, addresses: [] };
}
