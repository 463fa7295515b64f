/**
 * The dashboard's JSON shapes, shared by kilnd's dashboard API (src/api/dashboard) and the
 * browser code (src/dashboard/web), which imports these types only.
 */

/** One stats sample: CPU % of one core, memory (RSS) and disk (overlay) bytes. */
export interface DashSample {
  /** Milliseconds since the epoch. */
  t: number;
  cpu: number;
  mem: number;
  disk: number;
}

export interface DashSandbox {
  id: string;
  template: string;
  state: string;
  condition: string | null;
  metadata: Record<string, string>;
  memoryMiB: number;
  vcpus: number;
  createdAt: string;
  startedAt: string | null;
  endAt: string;
  endReason: string | null;
  /** The newest samples (the table's sparklines: the last few minutes). */
  recent: DashSample[];
}

export interface DashSandboxDetail extends DashSandbox {
  /** Every sample kilnd keeps (the last hour). */
  history: DashSample[];
  autoPause: boolean;
  /** Published ports' URLs are built by the page from this: `http://{port}-{id}.<domain>/`. */
  sandboxDomain: string;
}

export interface DashHost {
  version: string;
  accel: 'kvm' | 'tcg' | null;
  memory: {
    /** Memory committed to live sandboxes (paused ones included) and the admission limit. */
    admittedMiB: number;
    limitMiB: number | null;
    /** The host's own figures (/proc/meminfo). */
    totalMiB: number;
    usedMiB: number;
    freeMiB: number;
  };
  sandboxes: Record<string, number>;
  /** Bytes on disk (allocated blocks). */
  disk: { images: number; templates: number; snapshots: number; overlays: number };
  at: string;
}

export interface DashSession {
  label: string;
  admin: boolean;
  csrf: string;
  version: string;
  /** The most clones one fork may make (the fork dialog's bound). */
  forkMax: number;
}

export interface DashEvent {
  seq: number;
  at: string;
  level: string;
  message: string;
}

export interface DashEntry {
  name: string;
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  modified: string | null;
}

export interface DashTemplate {
  id: string;
  name: string;
  ready: boolean;
  memoryMiB: number | null;
  vcpus: number | null;
  createdAt: string | null;
  builds: { id: string; status: string; createdAt: string; reason: string | null }[];
}

/** What a fork made: the snapshot the clones restore, each clone's id, each failed clone's reason. */
export interface DashFork {
  snapshotId: string;
  sandboxes: string[];
  errors: string[];
}

/** One line of a build's log (the `lines` events of its stream). */
export interface DashBuildLine {
  at: string;
  level: string;
  message: string;
}

/** The last event of a build's log stream: its final status (`gone`: its records were deleted). */
export interface DashBuildEnd {
  status: string;
  reason: string | null;
}

/** A guest image in kilnd's cache (kernel, initramfs and root filesystem). */
export interface DashImage {
  key: string;
  /** The names pointing at it (`kiln image build --name`), e.g. `default`. */
  names: string[];
  /** Where its root filesystem came from: `debian <suite>` or an OCI image reference. */
  source: string;
  /** The OCI image's manifest digest, for one made from an OCI image. */
  digest: string | null;
  kernel: string;
  /** Allocated bytes on disk (the root filesystem is sparse). */
  diskBytes: number;
  createdAt: string;
  /** The templates booted from it that the session sees (kiln's hidden ones only for admins). */
  templates: string[];
}

export interface DashSnapshot {
  id: string;
  name: string | null;
  kind: string;
  sandboxId: string | null;
  templateId: string;
  createdAt: string;
}

export interface DashKey {
  id: string;
  name: string;
  prefix: string;
  admin: boolean;
  createdAt: string;
  lastUsedAt: string | null;
}
