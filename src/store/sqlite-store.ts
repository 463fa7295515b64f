import type * as D from '../core/domain.ts';
import { Db } from './sqlite-db.ts';
import * as events from './sqlite-events.ts';
import * as gc from './sqlite-gc.ts';
import * as journal from './sqlite-journal.ts';
import * as sandboxes from './sqlite-sandboxes.ts';
import * as snapshots from './sqlite-snapshots.ts';
import * as volumes from './sqlite-volumes.ts';
import * as builds from './sqlite-template-builds.ts';
import * as pool from './sqlite-pool.ts';
import type { BuildLogEntry } from '../core/template-steps.ts';
import type {
  DropUnused,
  Page,
  PageOpts,
  PurgeResult,
  SandboxFilter,
  SandboxPatch,
  SnapshotFilter,
  Store,
} from './store.ts';

/**
 * The Store on SQLite through node:sqlite (no native addon). WAL with synchronous=FULL: a
 * committed change survives kill -9 of the daemon and a host crash. Writes that read first
 * (state transitions) run in BEGIN IMMEDIATE transactions. One module per table group does the
 * SQL (sqlite-sandboxes, sqlite-snapshots, sqlite-gc, sqlite-events, sqlite-journal); this class only
 * holds the connection (sqlite-db) and delegates.
 */
export class SqliteStore implements Store {
  readonly #db: Db;

  /** Opens (creating if needed) and migrates the database at `path` (`:memory:` for tests). */
  constructor(path: string) {
    this.#db = new Db(path);
  }

  /** Schema version (number of applied migrations). */
  get schemaVersion(): number {
    return this.#db.schemaVersion;
  }

  putTemplate(t: D.TemplateRecord): void {
    snapshots.putTemplate(this.#db, t);
  }
  getTemplate(idOrName: string): D.TemplateRecord {
    return snapshots.getTemplate(this.#db, idOrName);
  }
  listTemplates(): D.TemplateRecord[] {
    return snapshots.listTemplates(this.#db);
  }
  deleteTemplate(id: string): void {
    snapshots.deleteTemplate(this.#db, id);
  }

  insertSandbox(s: D.SandboxRecord): void {
    sandboxes.insertSandbox(this.#db, s);
  }
  getSandbox(id: string): D.SandboxRecord {
    return sandboxes.getSandbox(this.#db, id);
  }
  listSandboxes(filter?: SandboxFilter, page?: PageOpts): Page<D.SandboxRecord> {
    return sandboxes.listSandboxes(this.#db, filter, page);
  }
  updateSandbox(id: string, patch: SandboxPatch, expect?: D.SandboxState[]): D.SandboxRecord {
    return sandboxes.updateSandbox(this.#db, id, patch, expect);
  }
  deleteSandbox(id: string): void {
    sandboxes.deleteSandbox(this.#db, id);
  }
  purgeEnded(endedBefore: string): PurgeResult {
    return events.purgeEnded(this.#db, endedBefore);
  }

  insertSnapshot(s: D.SnapshotRecord): void {
    snapshots.insertSnapshot(this.#db, s);
  }
  getSnapshot(idOrName: string): D.SnapshotRecord {
    return snapshots.getSnapshot(this.#db, idOrName);
  }
  listSnapshots(filter?: SnapshotFilter): D.SnapshotRecord[] {
    return snapshots.listSnapshots(this.#db, filter);
  }
  updateSnapshot(id: string, patch: Pick<D.SnapshotRecord, 'parentId' | 'artifacts'>): D.SnapshotRecord {
    return snapshots.updateSnapshot(this.#db, id, patch);
  }
  snapshotDependents(id: string): { snapshots: string[]; sandboxes: string[] } {
    return snapshots.snapshotDependents(this.#db, id);
  }
  hideSnapshot(id: string, at: string): D.SnapshotRecord {
    return snapshots.hideSnapshot(this.#db, id, at);
  }
  deleteSnapshot(id: string): void {
    snapshots.deleteSnapshot(this.#db, id);
  }
  touchSnapshots(ids: readonly string[], at: string): void {
    gc.touchSnapshots(this.#db, ids, at);
  }
  snapshotUses(): Map<string, string> {
    return gc.snapshotUses(this.#db);
  }
  dropUnused(o: DropUnused): { tombstoned: boolean } {
    return gc.dropUnused(this.#db, o);
  }

  beginOperation(op: Omit<D.OperationRecord, 'state' | 'steps' | 'error' | 'endedAt'>): D.OperationRecord {
    return journal.beginOperation(this.#db, op);
  }
  addStep(opId: string, step: D.OperationStep): void {
    journal.addStep(this.#db, opId, step);
  }
  finishOperation(opId: string, state: Exclude<D.OperationState, 'running'>, error?: string): void {
    journal.finishOperation(this.#db, opId, state, error);
  }
  getOperation(opId: string): D.OperationRecord {
    return journal.getOperation(this.#db, opId);
  }
  openOperations(): D.OperationRecord[] {
    return journal.openOperations(this.#db);
  }

  appendEvent(
    sandboxId: string,
    level: D.EventLevel,
    message: string,
    data?: Record<string, unknown>,
  ): D.EventRecord {
    return events.appendEvent(this.#db, sandboxId, level, message, data);
  }
  listEvents(sandboxId: string, page?: PageOpts): Page<D.EventRecord> {
    return events.listEvents(this.#db, sandboxId, page);
  }

  insertApiKey(k: D.ApiKeyRecord): void {
    journal.insertApiKey(this.#db, k);
  }
  getApiKeyByHash(keyHash: string): D.ApiKeyRecord {
    return journal.getApiKeyByHash(this.#db, keyHash);
  }
  listApiKeys(): D.ApiKeyRecord[] {
    return journal.listApiKeys(this.#db);
  }
  touchApiKey(id: string, at: string): void {
    journal.touchApiKey(this.#db, id, at);
  }
  deleteApiKey(id: string): void {
    journal.deleteApiKey(this.#db, id);
  }

  insertVolume(v: D.VolumeRecord): void {
    volumes.insertVolume(this.#db, v);
  }
  getVolume(idOrName: string): D.VolumeRecord {
    return volumes.getVolume(this.#db, idOrName);
  }
  listVolumes(): D.VolumeRecord[] {
    return volumes.listVolumes(this.#db);
  }
  deleteVolume(id: string): void {
    volumes.deleteVolume(this.#db, id);
  }
  volumeUsers(id: string): string[] {
    return volumes.volumeUsers(this.#db, id);
  }
  setMounts(sandboxId: string, mounts: readonly D.VolumeMount[]): void {
    volumes.setMounts(this.#db, sandboxId, mounts);
  }
  listMounts(sandboxId: string): D.VolumeMount[] {
    return volumes.listMounts(this.#db, sandboxId);
  }
  putBuild(b: D.TemplateBuildRecord): void {
    builds.putBuild(this.#db, b);
  }
  publishBuild(t: D.TemplateRecord, b: D.TemplateBuildRecord): void {
    this.#db.tx(() => {
      snapshots.putTemplate(this.#db, t);
      builds.putBuild(this.#db, b);
    });
  }
  getBuild(id: string): D.TemplateBuildRecord {
    return builds.getBuild(this.#db, id);
  }
  listBuilds(templateId?: string): D.TemplateBuildRecord[] {
    return builds.listBuilds(this.#db, templateId);
  }
  deleteBuilds(templateId: string): void {
    builds.deleteBuilds(this.#db, templateId);
  }
  appendBuildLog(buildId: string, e: BuildLogEntry): void {
    builds.appendBuildLog(this.#db, buildId, e);
  }
  buildLogs(buildId: string, offset: number, limit: number): BuildLogEntry[] {
    return builds.buildLogs(this.#db, buildId, offset, limit);
  }

  setPoolSize(templateId: string, size: number | null): void {
    pool.setPoolSize(this.#db, templateId, size);
  }
  poolSizes(): Map<string, number> {
    return pool.poolSizes(this.#db);
  }
  insertPoolVm(v: D.PoolVmRecord): void {
    pool.insertPoolVm(this.#db, v);
  }
  markPoolVmReady(id: string): void {
    pool.markPoolVmReady(this.#db, id);
  }
  listPoolVms(): D.PoolVmRecord[] {
    return pool.listPoolVms(this.#db);
  }
  deletePoolVm(id: string): boolean {
    return pool.deletePoolVm(this.#db, id);
  }
  takePoolVm(snapshotId: string): D.PoolVmRecord | undefined {
    return pool.takePoolVm(this.#db, snapshotId);
  }

  close(): void {
    this.#db.close();
  }
}
