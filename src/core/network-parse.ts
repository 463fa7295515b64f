/**
 * Parsing of a sandbox's network rules, the one place the E2B API, the native API and the CLI
 * share: E2B's `SandboxNetworkConfig` (create) and `SandboxNetworkUpdateConfig` (PUT .../network)
 * into the normalised shapes of network-policy.ts. Every bad entry is `invalid_argument` naming
 * the field and the entry; fields kiln does not implement are refused, never ignored.
 */
import { invalidArgument } from './errors.ts';
import { isCidr, normalizeCidr, parseDomainPattern } from './cidr.ts';
import { OPEN_NETWORK, type EgressRules, type SandboxNetwork } from './network-policy.ts';

/** At most this many entries in `allowOut` and in `denyOut` (each a rule in the nftables set). */
export const MAX_EGRESS_ENTRIES = 256;
/** The longest entry (a domain name is at most 253 characters, a `*.` wildcard 255). */
export const MAX_ENTRY_LENGTH = 255;

/**
 * How absent fields may be spelled: E2B's SDK sends `null` for what was not given (`absent`);
 * the native API refuses null (`refused`), as api/parse.ts does.
 */
export type NetworkNulls = 'absent' | 'refused';

/** Fields of E2B's network config kiln does not implement: refused when they ask for something. */
const UNSUPPORTED: Record<string, string> = {
  egressProxy: 'tunnelling egress through a proxy is not supported by kiln',
  rules: 'per-domain request transforms are not supported by kiln',
  httpsPorts: 'published HTTPS ports are not supported by kiln (ports serve plain HTTP)',
};
const CREATE_FIELDS = ['allowOut', 'denyOut', 'allowPublicTraffic', 'maskRequestHost'];
const UPDATE_FIELDS = ['allowOut', 'denyOut'];

const got = (v: unknown): string => `got ${JSON.stringify(v)}`;

/** An empty request for an unsupported feature (`rules: {}`, `httpsPorts: []`) asks for nothing. */
function asksFor(v: unknown): boolean {
  if (v === undefined || v === null) return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.keys(v).length > 0;
  return true;
}

function object(field: string, v: unknown): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw invalidArgument(field, `must be an object, ${got(v)}`);
  return v as Record<string, unknown>;
}

/** Refuses unsupported and unknown fields of a network object (`at` is its field path prefix). */
function checkKeys(o: Record<string, unknown>, known: string[], at: string, nulls: NetworkNulls): void {
  for (const [k, v] of Object.entries(o)) {
    if (v === null && nulls === 'absent') continue;
    const unsupported = UNSUPPORTED[k];
    if (unsupported !== undefined) {
      if (asksFor(v)) throw invalidArgument(`${at}${k}`, unsupported);
      continue;
    }
    if (!known.includes(k))
      throw invalidArgument(`${at}${k}`, `is not a network field (known: ${known.join(', ')})`);
  }
}

function present(o: Record<string, unknown>, k: string, at: string, nulls: NetworkNulls): unknown {
  const v = o[k];
  if (v === null) {
    if (nulls === 'absent') return undefined;
    throw invalidArgument(`${at}${k}`, `must not be null`);
  }
  return v;
}

/** A domain rule's normal form, or undefined when `s` is not one (core/cidr.ts checks it). */
function domainOf(s: string): string | undefined {
  try {
    return parseDomainPattern(s);
  } catch {
    return undefined;
  }
}

/** One entry: a CIDR or bare address (normalised by core/cidr.ts), or a domain rule (allowOut). */
function normaliseEntry(at: string, e: string, domains: boolean): string {
  const entry = e.trim();
  if (isCidr(entry)) return normalizeCidr(entry, at);
  const domain = domainOf(entry);
  if (domain !== undefined && !domains)
    throw invalidArgument(
      at,
      `"${e}": domain names are not supported for deny rules (use a CIDR or IP address)`,
    );
  if (domain !== undefined) return domain;
  throw invalidArgument(
    at,
    domains
      ? `"${e}" is not a CIDR, IP address or domain name (e.g. "10.0.0.0/8", "8.8.8.8", "example.com", "*.example.com")`
      : `"${e}" is not a CIDR or IP address (e.g. "10.0.0.0/8", "8.8.8.8")`,
  );
}

/**
 * One list of egress entries, normalised (duplicates dropped). `domains`: whether domain names
 * may appear (allowOut) or not (denyOut: E2B refuses them).
 */
export function parseEgressList(field: string, v: unknown, domains: boolean): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw invalidArgument(field, `must be an array of strings, ${got(v)}`);
  if (v.length > MAX_EGRESS_ENTRIES)
    throw invalidArgument(field, `has ${v.length} entries; at most ${MAX_EGRESS_ENTRIES} are allowed`);
  const out: string[] = [];
  v.forEach((e: unknown, i) => {
    const at = `${field}[${i}]`;
    if (typeof e !== 'string') throw invalidArgument(at, `must be a string, ${got(e)}`);
    if (e.length > MAX_ENTRY_LENGTH)
      throw invalidArgument(at, `is ${e.length} characters long; at most ${MAX_ENTRY_LENGTH} are allowed`);
    const norm = normaliseEntry(at, e, domains);
    if (!out.includes(norm)) out.push(norm);
  });
  return out;
}

/** E2B's `maskRequestHost`: a host (optionally `:port`) with `${PORT}` standing for the port. */
function parseMask(field: string, v: unknown): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw invalidArgument(field, `must be a string, ${got(v)}`);
  if (v === '' || v.length > MAX_ENTRY_LENGTH || !/^[A-Za-z0-9.\-_:[\]${}]+$/.test(v))
    throw invalidArgument(
      field,
      `"${v}" is not a host name (at most ${MAX_ENTRY_LENGTH} characters, e.g. "localhost:\${PORT}")`,
    );
  return v;
}

function parseBool(field: string, v: unknown): boolean | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw invalidArgument(field, `must be true or false, ${got(v)}`);
  return v;
}

export interface ParseNetworkOpts {
  /** The field path of the network object, as errors name it (`network`). */
  field: string;
  nulls: NetworkNulls;
}

/**
 * A create's network: E2B's `SandboxNetworkConfig` (`raw`, possibly absent) and the top-level
 * `allow_internet_access` (`internet`, absent = true). Absent everything = OPEN_NETWORK.
 */
export function parseNetwork(
  raw: unknown,
  internet: boolean | undefined,
  o: ParseNetworkOpts,
): SandboxNetwork {
  const egress = { ...OPEN_NETWORK.egress, internet: internet ?? true };
  if (raw === undefined || (raw === null && o.nulls === 'absent')) return { ...OPEN_NETWORK, egress };
  const n = object(o.field, raw);
  const at = `${o.field}.`;
  checkKeys(n, CREATE_FIELDS, at, o.nulls);
  const allowPublicTraffic = parseBool(
    `${at}allowPublicTraffic`,
    present(n, 'allowPublicTraffic', at, o.nulls),
  );
  const mask = parseMask(`${at}maskRequestHost`, present(n, 'maskRequestHost', at, o.nulls));
  return {
    egress: {
      allowOut: parseEgressList(`${at}allowOut`, present(n, 'allowOut', at, o.nulls), true),
      denyOut: parseEgressList(`${at}denyOut`, present(n, 'denyOut', at, o.nulls), false),
      internet: egress.internet,
    },
    allowPublicTraffic: allowPublicTraffic ?? true,
    ...(mask === undefined ? {} : { maskRequestHost: mask }),
  };
}

/**
 * An update's egress rules: E2B's `SandboxNetworkUpdateConfig` (the whole body). It replaces the
 * rules: an omitted list is cleared, an omitted `internetField` (`allow_internet_access`) is true.
 */
export function parseNetworkUpdate(
  raw: unknown,
  internetField: string,
  o: Omit<ParseNetworkOpts, 'field'> & { field?: string },
): EgressRules {
  const at = o.field ? `${o.field}.` : '';
  const n = object(o.field ?? 'body', raw ?? {});
  checkKeys(n, [...UPDATE_FIELDS, internetField], at, o.nulls);
  return {
    allowOut: parseEgressList(`${at}allowOut`, present(n, 'allowOut', at, o.nulls), true),
    denyOut: parseEgressList(`${at}denyOut`, present(n, 'denyOut', at, o.nulls), false),
    internet: parseBool(`${at}${internetField}`, present(n, internetField, at, o.nulls)) ?? true,
  };
}
