import { join } from 'node:path';
import type { ArtifactRecord, PoolVmRecord, SnapshotRecord } from '../../core/domain.ts';
import { KilnError } from '../../core/errors.ts';
import { procCpuMs } from '../../core/proc.ts';
import { LivenessWatcher } from '../liveness.ts';
import type { KeyedLock } from '../locks.ts';
import type { RemoveGuestPaths } from '../journal.ts';
import { DISK_LAYER } from './snapshot-files.ts';
import type { EgressEnforcer, SandboxServiceDeps } from './types.ts';
import { agentUrl } from './vm.ts';

/** The forwarded host address of a sandbox's agent, for the VM started at `startedAt`. */
export interface AgentAddr {
  host: string;
  port: number;
  startedAt: string | null;
}

/** What creates and admission need of the warm pool (daemon/pool/warm-pool.ts). */
export interface WarmPoolHooks {
  /** Takes a ready member restored from `snap` out of the pool (and refills); none: undefined. */
  take(snap: SnapshotRecord): PoolVmRecord | undefined;
  /** Kills one member to make room for a create or resume admission refused; false: none left. */
  evictOne(): Promise<boolean>;
}

/**
 * What every sandbox operation works with: the service's dependencies (the guest factory already
 * carrying the configured deadlines, a clock that is always set) and the little state the
 * facade owns. The facade (sandbox-service.ts) takes the per-sandbox locks of its public
 * operations; `locks` is here for the few steps that lock something else (a snapshot's files).
 */
export interface ServiceContext extends SandboxServiceDeps {
  now: () => number;
  locks: KeyedLock;
  /** Sandbox id -> its agent's forwarded address (the envd proxy's cache). */
  agentPorts: Map<string, AgentAddr>;
  /** Sandboxes with a kill in progress (a second one is refused, not queued). */
  killing: Set<string>;
  watcher: LivenessWatcher;
  /** The warm pool, when the facade runs one. */
  pool?: WarmPoolHooks | undefined;
  /** Removes paths in a running sandbox's guest (the journal's `guest-remove`; set by the facade). */
  removeGuestPaths?: RemoveGuestPaths | undefined;
}

/** The directory of snapshot `id` (its RAM, device state and disk layer). */
export function snapDir(sc: ServiceContext, id: string): string {
  return join(sc.dataDir, 'snapshots', id);
}

/** The disk layer a sandbox restored from `snap` (a record or its id) has its overlay on. */
export function diskLayer(sc: ServiceContext, snap: SnapshotRecord | string): string {
  const rec = typeof snap === 'string' ? sc.store.getSnapshot(snap) : snap;
  return join(snapDir(sc, rec.id), rec.artifacts.find((a) => a.kind === 'disk')?.path ?? DISK_LAYER);
}

/** The path of `snap`'s artifact of `kind`, if it has one. */
export function artifactPath(
  sc: ServiceContext,
  snap: SnapshotRecord,
  kind: ArtifactRecord['kind'],
): string | undefined {
  const a = snap.artifacts.find((x) => x.kind === kind);
  return a ? join(snapDir(sc, snap.id), a.path) : undefined;
}

/** Applies a running sandbox's rules to the network slot its VM runs in (the default enforcer). */
function slotEnforcer(deps: SandboxServiceDeps): EgressEnforcer | undefined {
  const nets = deps.networks;
  if (!nets) return undefined;
  return {
    apply: async (sandboxId, egress) => {
      const ns = (await deps.driver.status(sandboxId)).namespace;
      if (!ns) throw new KilnError('internal', `sandbox ${sandboxId}'s VM runs in no network namespace`);
      await nets.apply(ns, egress);
    },
  };
}

/**
 * The context of a new service over `deps`: every guest client gets the configured deadlines,
 * the clock defaults to Date.now, and the liveness watcher skips sandboxes `locks` holds and
 * ends dead ones with `kill` (the facade's).
 */
export function newServiceContext(
  deps: SandboxServiceDeps,
  locks: KeyedLock,
  kill: (id: string, reason: string) => Promise<unknown>,
): ServiceContext {
  const now = deps.now ?? Date.now;
  const guest: SandboxServiceDeps['guest'] = deps.guestTimeouts
    ? (o) => deps.guest({ timeouts: deps.guestTimeouts, ...o })
    : deps.guest;
  const watcher = new LivenessWatcher(
    {
      store: deps.store,
      driver: deps.driver,
      guest,
      log: deps.log,
      now,
      agentUrl,
      isHeld: (id) => locks.isHeld(id),
      cpuMs: deps.vmCpuMs ?? procCpuMs,
      kill,
    },
    deps.liveness,
  );
  const egress = deps.egress ?? slotEnforcer(deps);
  return { ...deps, guest, now, locks, agentPorts: new Map(), killing: new Set(), watcher, egress };
}
