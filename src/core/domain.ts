/**
 * kiln's durable records. The store keeps these; transient handles (pid, QMP socket, forwarded
 * ports) are not here: they are rediscovered from the OS at start-up (banger's split).
 */

import type { SandboxNetwork } from './network-policy.ts';

/** A sandbox's lifecycle. Legal moves are in SANDBOX_TRANSITIONS. */
export type SandboxState = 'creating' | 'running' | 'pausing' | 'paused' | 'resuming' | 'killing' | 'dead';

export const SANDBOX_TRANSITIONS: Record<SandboxState, readonly SandboxState[]> = {
  creating: ['running', 'killing', 'dead'],
  running: ['pausing', 'killing', 'dead'],
  pausing: ['paused', 'running', 'killing', 'dead'],
  paused: ['resuming', 'killing', 'dead'],
  resuming: ['running', 'paused', 'killing', 'dead'],
  killing: ['dead'],
  dead: [],
};

export interface ArtifactRecord {
  /**
   * What the file is: guest RAM, device state, a frozen disk layer; an imported snapshot also
   * carries the kernel and initrd it was booted with.
   */
  kind: 'memory' | 'state' | 'disk' | 'kernel' | 'initrd';
  /** Path relative to the snapshot's directory. */
  path: string;
  size: number;
  sha256: string;
}

export interface TemplateRecord {
  id: string;
  name: string;
  /** The guest image the template was booted from. */
  imageKey: string;
  memoryMiB: number;
  vcpus: number;
  /** The template snapshot every sandbox of this template restores. */
  snapshotId: string | null;
  createdAt: string;
  /** The API key whose template it is; null for kiln's own (built by kiln): every key may use those. */
  ownerKeyId: string | null;
}

/**
 * Something wrong with a sandbox that is otherwise in its state (kept `running`): `unresponsive`
 * = its guest agent stopped answering; `disk_full` = the hypervisor stopped the VM because the
 * host had no space left for its disk; `vm_stopped` = the VM's vCPUs are stopped for another
 * reason (an I/O error, a pause kiln did not ask for). Cleared when the condition ends.
 */
export type SandboxConditionCode = 'unresponsive' | 'disk_full' | 'vm_stopped';

export interface SandboxCondition {
  code: SandboxConditionCode;
  /** What is wrong and what to do, for people. */
  message: string;
  /** When it was first seen (ISO time). */
  since: string;
}

/**
 * What a pause keeps. `memory`: RAM and devices too, and resume restores the running guest;
 * `filesystem`: the disk only (E2B's `keepMemory: false`), and resume boots the guest afresh
 * on that disk (a new boot, no processes).
 */
export type PauseKind = 'memory' | 'filesystem';

export interface SandboxRecord {
  id: string;
  templateId: string;
  state: SandboxState;
  memoryMiB: number;
  vcpus: number;
  metadata: Record<string, string>;
  envVars: Record<string, string>;
  /** The guest agent's access token (envd's `envdAccessToken`). */
  accessToken: string;
  createdAt: string;
  startedAt: string | null;
  /** When the TTL reaper ends it (ISO time); extendable. */
  endAt: string;
  /** On timeout: pause instead of kill. */
  autoPause: boolean;
  /** A paused sandbox resumes when traffic for it arrives (E2B's autoResume). */
  autoResume: boolean;
  /** With autoPause: the timeout's pause keeps memory (true) or the filesystem only (E2B's autoPauseMemory). */
  autoPauseMemory: boolean;
  /** While paused (or pausing): what its pause kept (see PauseKind); null otherwise. */
  pauseKind: PauseKind | null;
  /**
   * Its egress rules and published-port settings, as its create asked (a restore or fork gets
   * its own create's), replaced by updateNetwork; kept across pause/resume and restarts.
   */
  network: SandboxNetwork;
  /**
   * E2B's `trafficAccessToken`: what a request to a published port must carry when
   * `network.allowPublicTraffic` is false. Minted at create; null for sandboxes made before it.
   */
  trafficToken: string | null;
  /** Why it is dead, when it is. */
  endReason: string | null;
  /**
   * The snapshot whose layers this sandbox's disk and memory sit on (template or user snapshot);
   * while paused, the pause snapshot it resumes from.
   */
  sourceSnapshotId: string | null;
  /**
   * The API key that created it (E2B API); only that key and admin keys see it. Null: made
   * through the native API (or before keys were scoped): admin keys only.
   */
  ownerKeyId: string | null;
  /** What is wrong with it now, if anything (see SandboxCondition); a dead sandbox keeps its last. */
  condition: SandboxCondition | null;
}

/**
 * `template`: a template's own (booted once, RAM in a shared file); `snapshot`: taken from a
 * running sandbox on request (restorable into new sandboxes); `pause`: a paused sandbox's state,
 * resumed under the same sandbox id; `fork`: the common state of a fork's clones. `pause` and
 * `fork` snapshots are internal: removed once nothing depends on them.
 */
export type SnapshotKind = 'template' | 'snapshot' | 'pause' | 'fork';

export interface SnapshotRecord {
  id: string;
  /** An optional unique name (E2B's snapshot names); usable wherever the id is. */
  name: string | null;
  kind: SnapshotKind;
  /** The sandbox it was taken from (null for a template's own snapshot). */
  sandboxId: string | null;
  templateId: string;
  memoryMiB: number;
  vcpus: number;
  /** A snapshot whose disk layer sits on top of this one's. */
  parentId: string | null;
  artifacts: ArtifactRecord[];
  /** The access token the guest agent inside the snapshot holds (to re-/init a restore). */
  guestToken: string | null;
  /** How long the source's vCPUs were stopped to take it (ms); null for templates. */
  pauseMs: number | null;
  /**
   * The machine revision its memory was saved from (vmm/driver.ts `MACHINE_REVISION`): a restore
   * builds that machine. A cold boot of its disk (a filesystem-only pause) uses the newest.
   */
  machine: number;
  createdAt: string;
  /**
   * The API key it belongs to (the one that took it, or its sandbox's); only that key and admin
   * keys see it. Null: admin keys only (templates' own snapshots go with their template).
   */
  ownerKeyId: string | null;
  /**
   * When a user deleted it (ISO time), else null. A deleted snapshot is gone for users (not
   * listed, not restorable, its name free) but its record stays as the disk layer sandboxes and
   * other snapshots may still stand on, until garbage collection reclaims it.
   */
  deletedAt: string | null;
}

/** An API key kiln issued (E2B's `X-API-KEY`); only a hash of the key is stored. */
export interface ApiKeyRecord {
  id: string;
  name: string;
  /** SHA-256 (hex) of the key. */
  keyHash: string;
  /** The key's first characters, to tell keys apart in listings. */
  prefix: string;
  createdAt: string;
  lastUsedAt: string | null;
  /** An admin key sees and acts on every sandbox, snapshot and template; others only their own. */
  admin: boolean;
}

/**
 * A persistent volume (E2B's volumes): a host directory that sandboxes mount at create; `token`
 * authorises E2B's volume content API for this volume only.
 */
export interface VolumeRecord {
  id: string;
  name: string;
  token: string;
  createdAt: string;
  /** The API key that created it (E2B API), or null (native API, or made before keys). */
  ownerKeyId: string | null;
}

/** Volume `volumeId` mounted in sandbox `sandboxId` at `path`; `index` picks its guest port. */
export interface VolumeMount {
  sandboxId: string;
  volumeId: string;
  path: string;
  index: number;
}

/**
 * A warm pool member: a VM restored from a template's snapshot and waited for, not yet /init'ed
 * (its agent still holds the snapshot's bootstrap token). Not a sandbox: no list or count shows
 * it. A create of that template takes it (its id becomes the sandbox's) and only runs /init.
 */
export interface PoolVmRecord {
  /** The VM's id, minted like a sandbox id: the sandbox that takes it keeps it. */
  id: string;
  templateId: string;
  /** The template snapshot it was restored from (a rebuilt template's older members are drained). */
  snapshotId: string;
  memoryMiB: number;
  /** `starting` while its fill runs (journalled), `ready` once its agent answered. */
  state: 'starting' | 'ready';
  createdAt: string;
}

export type OperationKind =
  | 'create'
  | 'kill'
  | 'snapshot'
  | 'fork'
  | 'restore'
  | 'pause'
  | 'resume'
  | 'template'
  | 'delete-snapshot'
  | 'import'
  | 'workspace-push'
  /** A warm pool member restored ahead of a create (daemon/pool). */
  | 'pool-fill'
  /** Template garbage collection's removal of an unused hidden template or snapshot (sandbox/collect.ts). */
  | 'collect'
  /** A template build, from its start to the template published (daemon/templates/run-build.ts). */
  | 'build';
export type OperationState = 'running' | 'done' | 'failed' | 'undone';

/** A tree a workspace push moved into place itself, known by the mark it left in it. */
export interface GuestPlaced {
  path: string;
  mark: string;
}

/**
 * How to take one completed step back after a crash: plain data, so a restarted daemon can act
 * on it (kill a VM by id, remove a path, delete a record).
 */
export type UndoAction =
  | { action: 'kill-vm'; vmId: string }
  | { action: 'release-network'; namespace: string }
  | { action: 'remove-path'; path: string }
  | { action: 'delete-sandbox'; sandboxId: string }
  | { action: 'delete-snapshot'; snapshotId: string }
  | { action: 'resume-vm'; vmId: string }
  | { action: 'delete-template'; templateId: string }
  | { action: 'detach-volumes'; sandboxId: string }
  /**
   * Paths inside a running sandbox's guest (a workspace push's staging files); and `placed.path`
   * when the push moved its tree there itself (its `.git/kiln-push` holds `placed.mark`).
   */
  | { action: 'guest-remove'; sandboxId: string; paths: string[]; placed?: GuestPlaced }
  /** A warm pool member's record (its VM is the `kill-vm` step's). */
  | { action: 'delete-pool-vm'; vmId: string }
  /** A sandbox of kiln's own (a template build's builder): its VM killed, its record dead with `reason`. */
  | { action: 'end-sandbox'; sandboxId: string; reason: string }
  /** A template build still `building`: ended `error` with `reason` (one still running when kilnd died). */
  | { action: 'fail-build'; buildId: string; reason: string }
  | { action: 'none' };

export interface OperationStep {
  name: string;
  undo: UndoAction;
  at: string;
}

export interface OperationRecord {
  id: string;
  kind: OperationKind;
  /** The sandbox/template/snapshot the operation is about. */
  subject: string;
  /** The op id minted at the API edge for the request that started it. */
  requestId: string | null;
  state: OperationState;
  steps: OperationStep[];
  error: string | null;
  startedAt: string;
  endedAt: string | null;
}

export type EventLevel = 'debug' | 'info' | 'warn' | 'error';

export interface EventRecord {
  /** Store-wide increasing sequence: the paging cursor. */
  seq: number;
  sandboxId: string;
  at: string;
  level: EventLevel;
  message: string;
  data: Record<string, unknown> | null;
}

/** Per-sandbox event retention (firkin keeps 1000). */
export const EVENTS_PER_SANDBOX = 1000;

/** A template build's state (E2B's TemplateBuildStatus; kiln never queues, so no `waiting`). */
export type TemplateBuildStatus = 'building' | 'ready' | 'error';

/**
 * One build of a template (E2B's template builds): requested by `POST /v3/templates`, started by
 * `POST /v2/templates/{id}/builds/{buildID}` with its steps, run by daemon/templates/.
 */
export interface TemplateBuildRecord {
  id: string;
  /** The template it builds (id kept across rebuilds of one name). */
  templateId: string;
  templateName: string;
  /** The API key that asked; the template becomes its own (null: kiln's own, native API). */
  ownerKeyId: string | null;
  tags: string[];
  status: TemplateBuildStatus;
  /** Requested resources (null: the parent's). */
  vcpus: number | null;
  memoryMiB: number | null;
  /** The build definition (core/template-steps.ts BuildSpec as JSON); null until started. */
  spec: string | null;
  /** Why it failed: message and the failed step (E2B's BuildStatusReason). */
  reason: { message: string; step?: string } | null;
  /** The builder sandbox while it runs (killed at the end, or at start-up after a crash). */
  builderId: string | null;
  /** The layer snapshots this build's template stands on (what deleting the template may free). */
  layers: string[];
  /** The template's snapshot once ready. */
  snapshotId: string | null;
  createdAt: string;
  updatedAt: string;
  finishedAt: string | null;
}
