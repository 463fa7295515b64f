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
