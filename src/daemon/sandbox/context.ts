import { join } from 'node:path';
import type { SnapshotRecord } from '../../core/domain.ts';
import type { LivenessWatcher } from '../liveness.ts';
import type { KeyedLock } from '../locks.ts';
import { DISK_LAYER } from './snapshot-files.ts';
import type { SandboxServiceDeps } from './types.ts';

/** The forwarded host address of a sandbox's agent, for the VM started at `startedAt`. */
export interface AgentAddr {
  host: string;
  port: number;
  startedAt: string | null;
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
