/**
 * kiln's configuration: every `KILN_*` environment variable is read here, once, by a process
 * entry (api/main.ts for kilnd, cli/main.ts, images/build-main.ts), and the values are passed
 * down explicitly (KilndOpts, QemuDriver's and buildImage's options). Library modules never read
 * `process.env` (ESLint enforces it). A bad value is refused at start-up with `invalid_argument`
 * naming the variable and what it may be. An unset or empty variable means "the default"; a
 * numeric knob left unset is `undefined` here, so its default stays where it is used (noted).
 * README.md, "Environment", lists them all.
 */
import { isIPv4 } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { MAX_WARM_POOL } from './defaults.ts';
import { invalidArgument } from './errors.ts';

export type AccelSetting = 'auto' | 'kvm' | 'tcg';

export interface KilnConfig {
  /** KILN_STATE_DIR, else $XDG_STATE_HOME/kiln, else ~/.local/state/kiln. */
  stateDir: string;
  /** KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else ~/.cache/kiln. */
  cacheDir: string;
  /** KILN_DEB_CACHE_DIR: where image builds keep downloaded .debs (default `<cacheDir>/debs`). */
  debCacheDir: string | undefined;
  /** KILN_DEBIAN_MIRROR: debootstrap's mirror (default: the host's apt source). */
  debianMirror: string | undefined;
  /** KILN_ACCEL: `auto` (default) probes KVM; `kvm` / `tcg` force. */
  accel: AccelSetting;
  /** KILN_E2B_API_PORT / KILN_E2B_SANDBOX_PORT (0 = any free port; default 7480 / 7481). */
  e2bApiPort: number | undefined;
  e2bSandboxPort: number | undefined;
  /** KILN_DASHBOARD_PORT: the web dashboard's port on 127.0.0.1 (0 = any free port; default 7482). */
  dashboardPort: number | undefined;
  /**
   * KILN_SANDBOX_DOMAIN: the `domain` the E2B API answers, so that the SDK's
   * `sandbox.getHost(port)` is `{port}-{sandboxId}.<domain>` (a name with wildcard DNS pointing
   * at the envd proxy, with `:port` if it is not 80). Default `localhost:<envd proxy port>`.
   */
  sandboxDomain: string | undefined;
  /** KILN_OVERCOMMIT_RATIO: guest memory may total host memory x this, > 0 (default 1.5). */
  overcommitRatio: number | undefined;
  /** KILN_DISK_RESERVE_MIB: free disk kept whatever sandboxes write (default 256). */
  diskReserveMiB: number | undefined;
  /** KILN_DISK_OVERCOMMIT_RATIO: disks' worst-case growth is divided by this (default 1). */
  diskOvercommitRatio: number | undefined;
  /** KILN_READY_TIMEOUT_MS: how long a restored guest may take to answer (default 60000). */
  readyTimeoutMs: number | undefined;
  /** KILN_TEMPLATE_READY_TIMEOUT_MS: how long a template build's ready command may take (default 120000). */
  templateReadyTimeoutMs: number | undefined;
  /** KILN_REAP_EVERY_MS / KILN_LIVENESS_EVERY_MS / KILN_FLATTEN_EVERY_MS: background loop periods. */
  reapEveryMs: number | undefined;
  livenessEveryMs: number | undefined;
  flattenEveryMs: number | undefined;
  /** KILN_RETENTION_S: how long ended sandboxes' records and events are kept (default 7 days). */
  retentionS: number | undefined;
  /**
   * KILN_TEMPLATE_GC_AFTER_S: how long a hidden template or build layer nothing depends on must
   * go unused before template garbage collection removes it (default 86400; 0 = at once).
   */
  templateGcAfterS: number | undefined;
  /** KILN_TEMPLATE_GC_EVERY_S: how often kilnd collects in the background (default 3600; 0 = only on demand). */
  templateGcEveryS: number | undefined;
  /** KILN_AGENT_GUARD: `on` (default) or `off` (skip the nftables rule on agent ports). */
  agentGuard: boolean;
  /**
   * KILN_KSM: `on` starts the host's kernel same-page merging (host-wide: /sys/kernel/mm/ksm/run)
   * so identical and freed guest pages are given back; `off` (default) leaves the host as it is.
   */
  ksm: boolean;
  /**
   * KILN_NETWORK: `isolated` (default: each sandbox in its own network namespace with nftables
   * rules; needs root) or `unisolated` (sandboxes share the host's network and reach its
   * loopback; every create warns).
   */
  network: 'isolated' | 'unisolated';
  /** KILN_NET_POOL: the IPv4 block sandbox network slots take /30s from (default 10.231.0.0/16). */
  netPool: string | undefined;
  /** KILN_DNS: the IPv4 resolver sandboxes' DNS goes to (default: the host's first non-loopback nameserver). */
  dns: string | undefined;
  /**
   * KILN_WARM_POOL: how many restored VMs kilnd keeps ready for creates of the default template
   * (`base`), unless a size is set for it through the API (default 0: no pool).
   */
  warmPool: number | undefined;
  /** KILN_FAILPOINT: crash tests only, `<op kind>:<journal step>`; kilnd dies right after it. */
  failpoint: string | undefined;
}

type Env = Readonly<Record<string, string | undefined>>;

/** The variable's value, `undefined` when unset or empty. */
function str(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v === '' ? undefined : v;
}

function oneOf<T extends string>(env: Env, name: string, allowed: readonly T[], dflt: T): T {
  const v = str(env, name);
  if (v === undefined) return dflt;
  if (!(allowed as readonly string[]).includes(v))
    throw invalidArgument(name, `must be one of ${allowed.join(' | ')}, got "${v}"`);
  return v as T;
}

function port(env: Env, name: string): number | undefined {
  const v = str(env, name);
  if (v === undefined) return undefined;
  const n = /^\d+$/.test(v.trim()) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw invalidArgument(name, `must be a TCP port (0-65535), got "${v}"`);
  return n;
}

/** A number >= min (> min when `above`). */
function num(env: Env, name: string, min: number, above = false): number | undefined {
  const v = str(env, name);
  if (v === undefined) return undefined;
  const n = v.trim() === '' ? NaN : Number(v);
  if (!Number.isFinite(n) || n < min || (above && n === min))
    throw invalidArgument(name, `must be a number ${above ? '>' : '>='} ${min}, got "${v}"`);
  return n;
}

/** A whole number >= min (milliseconds, seconds). */
function int(env: Env, name: string, min: number): number | undefined {
  const v = str(env, name);
  if (v === undefined) return undefined;
  const n = /^\d+$/.test(v.trim()) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < min)
    throw invalidArgument(name, `must be a whole number >= ${min}, got "${v}"`);
  return n;
}

function ipv4(env: Env, name: string): string | undefined {
  const v = str(env, name);
  if (v !== undefined && !isIPv4(v)) throw invalidArgument(name, `must be an IPv4 address, got "${v}"`);
  return v;
}

/** A host name (lowercase letters, digits, dots, dashes) with an optional `:port`. */
function domain(env: Env, name: string): string | undefined {
  const v = str(env, name);
  if (v === undefined) return undefined;
  const m = /^([a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*)(:(\d{1,5}))?$/.exec(v);
  if (!m || (m[6] !== undefined && (Number(m[6]) < 1 || Number(m[6]) > 65535)))
    throw invalidArgument(
      name,
      `must be a lowercase host name with an optional :port (e.g. sandbox.example.com:7481), got "${v}"`,
    );
  return v;
}

function poolSize(env: Env, name: string): number | undefined {
  const n = int(env, name, 0);
  if (n !== undefined && n > MAX_WARM_POOL)
    throw invalidArgument(name, `must be a whole number from 0 to ${MAX_WARM_POOL}, got "${n}"`);
  return n;
}

/** Reads and checks every KILN_* variable; call once, at start-up, in a process entry. */
export function loadConfig(env: Env = process.env, home: string = homedir()): KilnConfig {
  return {
    stateDir:
      str(env, 'KILN_STATE_DIR') ?? join(str(env, 'XDG_STATE_HOME') ?? join(home, '.local', 'state'), 'kiln'),
    cacheDir: str(env, 'KILN_CACHE_DIR') ?? join(str(env, 'XDG_CACHE_HOME') ?? join(home, '.cache'), 'kiln'),
    debCacheDir: str(env, 'KILN_DEB_CACHE_DIR'),
    debianMirror: str(env, 'KILN_DEBIAN_MIRROR'),
    accel: oneOf(env, 'KILN_ACCEL', ['auto', 'kvm', 'tcg'], 'auto'),
    e2bApiPort: port(env, 'KILN_E2B_API_PORT'),
    e2bSandboxPort: port(env, 'KILN_E2B_SANDBOX_PORT'),
    dashboardPort: port(env, 'KILN_DASHBOARD_PORT'),
    sandboxDomain: domain(env, 'KILN_SANDBOX_DOMAIN'),
    overcommitRatio: num(env, 'KILN_OVERCOMMIT_RATIO', 0, true),
    diskReserveMiB: num(env, 'KILN_DISK_RESERVE_MIB', 0),
    diskOvercommitRatio: num(env, 'KILN_DISK_OVERCOMMIT_RATIO', 1),
    readyTimeoutMs: int(env, 'KILN_READY_TIMEOUT_MS', 1000),
    templateReadyTimeoutMs: int(env, 'KILN_TEMPLATE_READY_TIMEOUT_MS', 1000),
    reapEveryMs: int(env, 'KILN_REAP_EVERY_MS', 100),
    livenessEveryMs: int(env, 'KILN_LIVENESS_EVERY_MS', 100),
    flattenEveryMs: int(env, 'KILN_FLATTEN_EVERY_MS', 1000),
    retentionS: int(env, 'KILN_RETENTION_S', 0),
    templateGcAfterS: int(env, 'KILN_TEMPLATE_GC_AFTER_S', 0),
    templateGcEveryS: int(env, 'KILN_TEMPLATE_GC_EVERY_S', 0),
    agentGuard: oneOf(env, 'KILN_AGENT_GUARD', ['on', 'off'], 'on') === 'on',
    ksm: oneOf(env, 'KILN_KSM', ['on', 'off'], 'off') === 'on',
    network: oneOf(env, 'KILN_NETWORK', ['isolated', 'unisolated'], 'isolated'),
    netPool: str(env, 'KILN_NET_POOL'),
    dns: ipv4(env, 'KILN_DNS'),
    warmPool: poolSize(env, 'KILN_WARM_POOL'),
    failpoint: str(env, 'KILN_FAILPOINT'),
  };
}
