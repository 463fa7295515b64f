/**
 * How many connections each kilnd listener may hold, from the file descriptors the process
 * actually has, so that no client load can bring kilnd to its descriptor limit (where opening a
 * VM's files, QMP socket or the database fails and VMs get lost).
 *
 * The limit: Node raises its own soft RLIMIT_NOFILE to the hard limit at start-up (node.cc,
 * PlatformInit), which is as far as an unprivileged process may go; kilnd reads what it got from
 * /proc/self/limits. A quarter of it (at least 256, at most 8192) is kept back for everything
 * that is not a client connection: the SQLite database and its WAL, logs, one QMP socket and a
 * few files per VM, connections to guest agents, child processes' pipes (qemu, qemu-img, tar).
 * The rest is shared: 10% native API (local CLI and SDK), 30% E2B API, 60% envd proxy, whose
 * every connection costs two descriptors (the client's and the one to the guest). Each listener
 * is also capped (1024 / 4096 / 8192): more would only hold memory for idle clients.
 */
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { ListenerLimits } from './listener.ts';

export interface Nofile {
  soft: number;
  hard: number;
}

/** The `Max open files` line of /proc/<pid>/limits (`unlimited` as Infinity); undefined if absent. */
export function parseNofile(procLimits: string): Nofile | undefined {
  const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)\s/m.exec(procLimits);
  if (!m) return undefined;
  const n = (s: string | undefined): number => (s === 'unlimited' || s === undefined ? Infinity : Number(s));
  return { soft: n(m[1]), hard: n(m[2]) };
}

/** This process's descriptor limits, or undefined where /proc is not there. */
export function readNofile(path = '/proc/self/limits'): Nofile | undefined {
  try {
    return parseNofile(readFileSync(path, 'utf8'));
  } catch {
    return undefined;
  }
}

/** Assumed when the limit cannot be read: the traditional default soft limit. */
export const FALLBACK_NOFILE = 1024;

export type ListenerName = 'native' | 'e2bApi' | 'envdProxy';

export interface ListenersPlan {
  /** The descriptor limit the plan is for. */
  nofile: number;
  /** Descriptors kept for everything but client connections. */
  reserve: number;
  native: ListenerLimits;
  e2bApi: ListenerLimits;
  envdProxy: ListenerLimits;
}

const clamp = (v: number, lo: number, hi: number): number => Math.max(lo, Math.min(hi, v));

/** Each listener's timeouts; see {@link ListenerLimits}. */
const TIMEOUTS: Record<ListenerName, Omit<ListenerLimits, 'maxConnections'>> = {
  // Local clients; imports stream archives of any size, so no deadline for a whole request.
  native: {
    headersTimeoutMs: 15_000,
    requestTimeoutMs: 0,
    keepAliveTimeoutMs: 5_000,
    maxRequestsPerSocket: 1000,
  },
  // JSON bodies of at most 1 MiB: a minute to send one is plenty. Answers (a first create builds
  // the base template) are not covered by it.
  e2bApi: {
    headersTimeoutMs: 15_000,
    requestTimeoutMs: 60_000,
    keepAliveTimeoutMs: 30_000,
    maxRequestsPerSocket: 1000,
  },
  // Request bodies are streams (Connect client streams such as stdin, file uploads): no deadline
  // for a whole request. Idle keep-alive as in E2B's proxy (above the SDK's own 600 s).
  envdProxy: {
    headersTimeoutMs: 15_000,
    requestTimeoutMs: 0,
    keepAliveTimeoutMs: 650_000,
    maxRequestsPerSocket: 1000,
  },
};

/**
 * The limits of the three listeners for a process with `nofile` descriptors; `overrides` replace
 * single values (tests use short timeouts; an operator may set a cap).
 */
export function planListeners(
  nofile: number,
  overrides: Partial<Record<ListenerName, Partial<ListenerLimits>>> = {},
): ListenersPlan {
  const n = Number.isFinite(nofile) && nofile > 0 ? Math.floor(nofile) : 1 << 20;
  const reserve = clamp(Math.floor(n / 4), Math.min(256, Math.floor(n / 2)), 8192);
  const budget = n - reserve;
  const caps: Record<ListenerName, number> = {
    native: clamp(Math.floor(budget * 0.1), 8, 1024),
    e2bApi: clamp(Math.floor(budget * 0.3), 8, 4096),
    envdProxy: clamp(Math.floor((budget * 0.6) / 2), 8, 8192),
  };
  const one = (name: ListenerName): ListenerLimits => ({
    maxConnections: caps[name],
    ...TIMEOUTS[name],
    ...overrides[name],
  });
  return { nofile: n, reserve, native: one('native'), e2bApi: one('e2bApi'), envdProxy: one('envdProxy') };
}

/**
 * The listeners' limits, sized from the descriptors this process has (Node raises its soft limit
 * to the hard one at start-up; a soft limit still below it is worth a warning).
 */
export function listenerPlan(
  log: Logger,
  overrides: Partial<Record<ListenerName, Partial<ListenerLimits>>> | undefined,
): ListenersPlan {
  const nofile = readNofile();
  if (nofile && nofile.soft < nofile.hard)
    log.warn(nofile, 'the open-files soft limit is below the hard limit; kilnd serves fewer connections');
  const plan = planListeners(nofile?.soft ?? FALLBACK_NOFILE, overrides);
  log.info(
    {
      nofile: plan.nofile,
      reserve: plan.reserve,
      maxConnections: {
        native: plan.native.maxConnections,
        e2bApi: plan.e2bApi.maxConnections,
        envdProxy: plan.envdProxy.maxConnections,
      },
    },
    'listener limits',
  );
  return plan;
}
