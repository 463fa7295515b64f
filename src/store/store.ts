import type {
  ApiKeyRecord,
  EventLevel,
  EventRecord,
  OperationRecord,
  OperationState,
  OperationStep,
  PoolVmRecord,
  SandboxRecord,
  SandboxState,
  SnapshotRecord,
  TemplateBuildRecord,
  TemplateRecord,
  VolumeMount,
  VolumeRecord,
} from '../core/domain.ts';
import type { BuildLogEntry } from '../core/template-steps.ts';

export interface Page<T> {
  items: T[];
  /** Pass back as `cursor` for the next page; undefined on the last page. */
  next: string | undefined;
}

export interface PageOpts {
  limit?: number;
  cursor?: string | undefined;
}

export interface SandboxFilter {
  states?: SandboxState[];
  /** Every pair must match. */
  metadata?: Record<string, string>;
  /** Only sandboxes whose metadata has no such key (kiln's own builder sandboxes are hidden so). */
  withoutMetadataKey?: string;
  templateId?: string;
  /** Only sandboxes this API key created. */
  ownerKeyId?: string;
  /** Only sandboxes started (else created) at or after this ISO time. */
  startedAfter?: string;
  /** Creation order: `asc` oldest first (the default), `desc` newest first; cursors follow it. */
  order?: 'asc' | 'desc';
}

/** What `purgeEnded` deleted. */
export interface PurgeResult {
  /** The dead sandboxes whose records are gone. */
  sandboxes: string[];
  /** How many of their events went with them. */
  events: number;
  /** How many finished journal entries about them went with them. */
  operations: number;
}

export interface SnapshotFilter {
  sandboxId?: string;
  templateId?: string;
  /** true: only deleted snapshots (layers kept for others); false: only live ones; unset: all. */
  deleted?: boolean;
}

/** What `dropUnused` removes (see there). */
export interface DropUnused {
  /** A hidden template to remove (null: a snapshot alone). */
  templateId: string | null;
  /** Its snapshot (the template's current one), or a snapshot no template points at; null: none. */
  snapshotId: string | null;
  /** The name the template keeps when sandbox records still name it (null: refuse then). */
  tombstone: string | null;
}

export type SandboxPatch = Partial<Omit<SandboxRecord, 'id' | 'createdAt'>>;

/**
 * Durable state. Every method is atomic; a crash leaves either the old or the new state.
 * Errors: `not_found`, `already_exists`, `invalid_state` (a state transition that is not legal or
 * whose expected current state does not match), `invalid_argument`.
 */
export interface Store {
  putTemplate(t: TemplateRecord): void;
  getTemplate(idOrName: string): TemplateRecord;
  listTemplates(): TemplateRecord[];
  deleteTemplate(id: string): void;

  insertSandbox(s: SandboxRecord): void;
  getSandbox(id: string): SandboxRecord;
  /** Sandboxes by creation order (oldest first), filtered, paged. */
  listSandboxes(filter?: SandboxFilter, page?: PageOpts): Page<SandboxRecord>;
  /**
   * Changes a sandbox. A `state` change must be a legal transition; with `expect`, it applies
   * only if the current state is one of them (compare-and-set), else `invalid_state`.
   */
  updateSandbox(id: string, patch: SandboxPatch, expect?: SandboxState[]): SandboxRecord;
  deleteSandbox(id: string): void;
  /**
   * Retention: deletes the sandboxes that became `dead` before `endedBefore` (ISO time), with
   * their events and finished journal entries. A dead sandbox that a snapshot was taken from (the
   * snapshot's `sandboxId`) is kept while that snapshot exists. `invalid_argument` for a bad time.
   */
  purgeEnded(endedBefore: string): PurgeResult;

  insertSnapshot(s: SnapshotRecord): void;
  /**
   * A snapshot by id or name, deleted ones included (their layers are still read: disk chains,
   * resumes, recovery). What users see must skip `deletedAt` ones.
   */
  getSnapshot(id: string): SnapshotRecord;
  listSnapshots(filter?: SnapshotFilter): SnapshotRecord[];
  /** Re-points a snapshot's disk layer (after its chain was flattened). */
  updateSnapshot(id: string, patch: Pick<SnapshotRecord, 'parentId' | 'artifacts'>): SnapshotRecord;
  /**
   * Snapshots and sandboxes that depend on this snapshot's layers (children, restores; warm pool
   * members count as sandboxes).
   */
  snapshotDependents(id: string): { snapshots: string[]; sandboxes: string[] };
  /**
   * Deletes a snapshot for its users (by id): marks it deleted at `at` (ISO time) and frees its
   * name, at once, whatever stands on it; the record stays as a disk layer until `deleteSnapshot`
   * reclaims it. `not_found` for an unknown or already deleted snapshot.
   */
  hideSnapshot(id: string, at: string): SnapshotRecord;
  /** Removes a snapshot's record (reclaims its layer); refused while something depends on it. */
  deleteSnapshot(id: string): void;
  /** Records that the snapshots were used at `at` (ISO time); the latest use is kept, unknown ids skipped. */
  touchSnapshots(ids: readonly string[], at: string): void;
  /** Snapshot id -> when it was last used (never-touched snapshots are absent); removed with the snapshot. */
  snapshotUses(): Map<string, string>;
  /**
   * Template garbage collection: removes an unused hidden template (with its current snapshot)
   * and/or a snapshot no template points at, in one transaction that re-checks that nothing
   * depends on the snapshot (`invalid_state` otherwise, and when the template's snapshot
   * changed). A template sandbox records still name is renamed `tombstone`, without snapshot.
   */
  dropUnused(o: DropUnused): { tombstoned: boolean };

  /** Journals an operation before its first step runs. */
  beginOperation(op: Omit<OperationRecord, 'state' | 'steps' | 'error' | 'endedAt'>): OperationRecord;
  /** Records a completed step and how to undo it. */
  addStep(opId: string, step: OperationStep): void;
  finishOperation(opId: string, state: Exclude<OperationState, 'running'>, error?: string): void;
  getOperation(opId: string): OperationRecord;
  /** Operations a crash interrupted (state `running`), oldest first. */
  openOperations(): OperationRecord[];

  /** Appends to a sandbox's bounded log (oldest entries beyond the limit are dropped). */
  appendEvent(
    sandboxId: string,
    level: EventLevel,
    message: string,
    data?: Record<string, unknown>,
  ): EventRecord;
  listEvents(sandboxId: string, page?: PageOpts): Page<EventRecord>;

  /** Records an issued API key (only its hash); `already_exists` for a known id or hash. */
  insertApiKey(k: ApiKeyRecord): void;
  /** The key whose SHA-256 is `keyHash`; `not_found` when none. */
  getApiKeyByHash(keyHash: string): ApiKeyRecord;
  /** Keys by creation time, oldest first. */
  listApiKeys(): ApiKeyRecord[];
  /** Records that the key was just used. */
  touchApiKey(id: string, at: string): void;
  /** Revokes a key; `not_found` when there is none with that id. */
  deleteApiKey(id: string): void;

  /** Volumes (E2B's): `already_exists` for a taken name. */
  insertVolume(v: VolumeRecord): void;
  /** By id or name; `not_found` if neither. */
  getVolume(idOrName: string): VolumeRecord;
  listVolumes(): VolumeRecord[];
  /** `invalid_state` while a live sandbox mounts it (checked atomically), `not_found` if gone. */
  deleteVolume(id: string): void;
  /** Live sandboxes mounting volume `id`. */
  volumeUsers(id: string): string[];
  /** Replaces a sandbox's mounts (`[]` detaches them all). */
  setMounts(sandboxId: string, mounts: readonly VolumeMount[]): void;
  listMounts(sandboxId: string): VolumeMount[];

  /** Template builds (issue 14): insert or replace one; its log lines stay. */
  putBuild(b: TemplateBuildRecord): void;
  getBuild(id: string): TemplateBuildRecord;
  /**
   * A finished build and its template (new, or the name's existing one pointed at the build's
   * snapshot), in one transaction: a crash leaves the template unchanged and the build running,
   * or both done.
   */
  publishBuild(t: TemplateRecord, b: TemplateBuildRecord): void;
  /** Builds of one template (or all), oldest first. */
  listBuilds(templateId?: string): TemplateBuildRecord[];
  /** Removes a template's builds and their logs. */
  deleteBuilds(templateId: string): void;
  appendBuildLog(buildId: string, e: BuildLogEntry): void;
  /** A build's log lines from `offset` (0-based), at most `limit`. */
  buildLogs(buildId: string, offset: number, limit: number): BuildLogEntry[];

  /** Warm pool (issue 15): sets template `templateId`'s pool size, or clears it (`null`). */
  setPoolSize(templateId: string, size: number | null): void;
  /** Template id -> the pool size set for it (templates without a setting are absent). */
  poolSizes(): Map<string, number>;
  /** Records a warm pool member (its fill journals it). */
  insertPoolVm(v: PoolVmRecord): void;
  /** The member's agent answered: it can be taken. `not_found` when it is gone. */
  markPoolVmReady(id: string): void;
  /** Every warm pool member, oldest first. Members are no sandboxes: no sandbox list holds them. */
  listPoolVms(): PoolVmRecord[];
  /** Removes a member's record; false when it was gone already. */
  deletePoolVm(id: string): boolean;
  /** Takes (removes and answers) the oldest ready member restored from `snapshotId`, atomically. */
  takePoolVm(snapshotId: string): PoolVmRecord | undefined;

  close(): void;
}
