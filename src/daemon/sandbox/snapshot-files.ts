import type { ArtifactRecord, OperationRecord } from '../../core/domain.ts';
import { artifact } from '../snapshot-archive.ts';

/**
 * The layout of a snapshot directory (snapshots/<id>/) and the journal names of taking one.
 * Shared by the operations that write one (template, snapshot, pause, import) and by recovery.
 */

/** What a snapshot directory records about itself while it is being taken (for roll-forward). */
export interface SnapshotMeta {
  id: string;
  name: string | null;
  kind: 'snapshot' | 'fork' | 'pause';
  sandboxId: string | null;
  templateId: string;
  memoryMiB: number;
  vcpus: number;
  parentId: string | null;
  guestToken: string | null;
  pauseMs: number | null;
  /** Absent in directories written before keys were scoped. */
  ownerKeyId?: string | null;
  /** A filesystem-only pause: the directory keeps the disk layer only (no state, no RAM). */
  filesystemOnly?: boolean;
  /** The source VM's machine revision, set when its state is saved; absent in older directories: legacy. */
  machine?: number;
}

export const META_FILE = 'snapshot.json';
/** Device state + RAM as saved from a running sandbox, before the RAM moves into `memory`. */
export const FULL_STATE = 'state.full';
export const DISK_LAYER = 'disk.qcow2';
/** The journal step after which a snapshot (or pause) is finished, never undone. */
export const POINT_OF_NO_RETURN = { snapshot: 'disk frozen', pause: 'vm stopped' } as const;

/** True when a snapshot, fork or pause op got past its point of no return (it is finished, not undone). */
export function pastPointOfNoReturn(op: OperationRecord): boolean {
  return (
    ((op.kind === 'snapshot' || op.kind === 'fork') &&
      op.steps.some((st) => st.name === POINT_OF_NO_RETURN.snapshot)) ||
    (op.kind === 'pause' && op.steps.some((st) => st.name === POINT_OF_NO_RETURN.pause))
  );
}

/** The records of a snapshot directory's memory, state and disk layer (`diskOnly`: the layer alone). */
export async function snapshotArtifacts(dir: string, diskOnly = false): Promise<ArtifactRecord[]> {
  if (diskOnly) return [await artifact(dir, 'disk', DISK_LAYER)];
  return [
    await artifact(dir, 'memory', 'memory'),
    await artifact(dir, 'state', 'state'),
    await artifact(dir, 'disk', DISK_LAYER),
  ];
}
