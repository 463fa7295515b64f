import type { VolumeService } from './volumes/volume-service.ts';
import type { Readable } from 'node:stream';
import type { WorkspaceExportHead, WorkspaceView } from '../core/api-types.ts';
import type {
  EventRecord,
  OperationKind,
  SandboxRecord,
  SnapshotKind,
  SnapshotRecord,
  TemplateRecord,
} from '../core/domain.ts';
import type { EgressRules } from '../core/network-policy.ts';
import { DEFAULT_TEMPLATE, MAX_WARM_POOL } from '../core/defaults.ts';
import { validateInt, validateName } from '../core/validate.ts';
import type { Page, PageOpts, SandboxFilter } from '../store/store.ts';
import type { ExecOpts, ExecResult, GuestMetrics } from './guest-client.ts';
import { memoryCommitment } from './admission.ts';
import { OpRun } from './journal.ts';
import { KeyedLock } from './locks.ts';
import { startLoops, type LoopOpts } from './monitors/loops.ts';
import { reapExpired, setEndTime } from './monitors/reaper.ts';
import { StatsSampler } from './monitors/stats.ts';
import { reconcile, type ReconcileReport } from './recovery/reconcile.ts';
import { WarmPool, type WarmPoolStatus } from './pool/warm-pool.ts';
import { agent, exec, guestMetrics, guestPortUrl, setGuestDefaults, writeStdin } from './sandbox/agent.ts';
import { exportSnapshot, importSnapshot } from './sandbox/archive.ts';
import { newServiceContext, type ServiceContext } from './sandbox/context.ts';
import { removeUnused, type RemoveOutcome, type UnusedTarget } from './sandbox/collect.ts';
import { createSandbox, planCreate } from './sandbox/create.ts';
import { deleteSnapshot, flattenChains } from './sandbox/gc.ts';
import { killSandbox } from './sandbox/kill.ts';
import { updateNetwork } from './sandbox/network.ts';
import { pauseSandbox, resumeSandbox } from './sandbox/pause-resume.ts';
import * as q from './sandbox/queries.ts';
import { assertRestorable, forkClones, takeSnapshot, type ForkResult } from './sandbox/snapshot.ts';
import { buildTemplate } from './sandbox/templates.ts';
import {
  DEFAULT_TIMEOUT_S,
  MAX_FORK,
  MAX_TIMEOUT_S,
  type BootImage,
  type CreateRequest,
  type OpCtx,
  type SandboxServiceDeps,
  type SandboxStats,
} from './sandbox/types.ts';
import { purgeEndedRecords } from './monitors/retention.ts';
import { exportWorkspace, type ExportOpts, type ExportSink } from './workspace/export.ts';
import { checkPushOpts, pushWorkspace, removeGuestPaths, type PushOpts } from './workspace/push.ts';
import { checkExportOpts } from './workspace/export.ts';

/** How often the warm pool is checked and refilled besides after takes (ms). */
const WARM_POOL_EVERY_MS = 5000;

export type {
  BootImage,
  RemoveOutcome,
  UnusedTarget,
  CreateRequest,
  OpCtx,
  ReconcileReport,
  SandboxServiceDeps,
  SandboxStats,
  WarmPoolStatus,
};
export {
  DEFAULT_TIMEOUT_S,
  MAX_DISK_CHAIN,
  MAX_FORK,
  MAX_TIMEOUT_S,
  STATS_EVERY_MS,
} from './sandbox/types.ts';

/**
 * The sandbox lifecycle: templates are snapshots of a booted guest; a sandbox is a restore of
 * one. This is a thin facade: it owns the dependencies and the per-sandbox locks, takes the lock
 * an operation needs and delegates to the operation's own module (sandbox/, recovery/,
 * monitors/). Every multi-step operation is journalled with an undo per step.
 */
export class SandboxService {
  readonly #locks = new KeyedLock();
  /** Workspace push and export of one sandbox, one at a time; apart from #locks (kill, pause, snapshot). */
  readonly #workspaceLocks = new KeyedLock();
  readonly #sc: ServiceContext;
  readonly #stats: StatsSampler;
  readonly #pool: WarmPool;
  #timers: NodeJS.Timeout[] = [];

  /** Volumes (E2B's), when this kilnd serves them (isolated networks). */
  get volumes(): VolumeService | undefined {
    return this.#sc.volumes;
  }

  constructor(deps: SandboxServiceDeps) {
    this.#sc = newServiceContext(deps, this.#locks, (id, reason) => this.kill(id, {}, reason));
    this.#sc.removeGuestPaths = (id, paths, placed) => removeGuestPaths(this.#sc, id, paths, placed);
    this.#stats = new StatsSampler(this.#sc);
    this.#pool = new WarmPool(this.#sc, {
      defaultTemplate: deps.warmPool?.defaultTemplate ?? DEFAULT_TEMPLATE,
      defaultSize: deps.warmPool?.defaultSize ?? 0,
    });
    this.#sc.pool = this.#pool;
  }

  // ---- templates

  /** An operation made of several of this service's calls (a template build), in its journal. */
  beginOperation(kind: OperationKind, subject: string, requestId?: string): OpRun {
    return new OpRun(this.#sc, kind, subject, requestId);
  }

  /**
   * Boots `image` once, waits for its agent and snapshots it: RAM file, device state and frozen
   * disk, stored content-addressed under snapshots/<id>. The template then points to it.
   */
  async buildTemplate(
    name: string,
    image: BootImage,
    res: { memoryMiB: number; vcpus: number },
    ctx: OpCtx = {},
  ): Promise<TemplateRecord> {
    return buildTemplate(this.#sc, name, image, res, ctx);
  }

  templates(): TemplateRecord[] {
    return this.#sc.store.listTemplates();
  }

  /**
   * True when sandboxes can be made from the template: it has a snapshot whose agent holds a
   * bootstrap token (one built by an older kiln has none and must be rebuilt).
   */
  templateReady(t: TemplateRecord): boolean {
    return q.templateReady(this.#sc, t);
  }

  // ---- warm pool (pool/warm-pool.ts)

  /** Every template with a warm pool size or members: the size, how many are ready and starting. */
  warmPool(): WarmPoolStatus[] {
    return this.#pool.status();
  }

  /**
   * Sets template `ref`'s warm pool size (0..MAX_WARM_POOL; `null` goes back to the default:
   * KILN_WARM_POOL for the default template, else 0) and refills or drains in the background.
   * Answers its status.
   */
  setWarmPoolSize(ref: string, size: number | null): WarmPoolStatus {
    const t = this.#sc.store.getTemplate(ref);
    this.#sc.store.setPoolSize(t.id, size === null ? null : validateInt('size', size, 0, MAX_WARM_POOL));
    this.#pool.kick();
    return this.warmPoolOf(t.id);
  }

  /** One template's warm pool status (size 0 and nothing in it when it has none). */
  warmPoolOf(ref: string): WarmPoolStatus {
    const t = this.#sc.store.getTemplate(ref);
    return (
      this.#pool.status().find((p) => p.templateId === t.id) ?? {
        templateId: t.id,
        template: t.name,
        size: 0,
        sizeSet: this.#sc.store.poolSizes().has(t.id),
        ready: 0,
        starting: 0,
      }
    );
  }

  /** Kills template `templateId`'s warm pool VMs (before it is deleted); resolves with their ids. */
  async drainWarmPool(templateId: string): Promise<string[]> {
    return this.#pool.drain(templateId);
  }

  /** One refill pass of the warm pool, awaited (the background runs them on its own). */
  async refillWarmPool(): Promise<void> {
    await this.#pool.settled();
    await this.#pool.refillOnce(true);
  }

  // ---- sandboxes

  /**
   * Creates a sandbox by restoring `req.template`: a template (name or id) or a snapshot (id or
   * name) taken from a sandbox. New id, new access token, clock re-synced.
   */
  async create(req: CreateRequest, ctx: OpCtx = {}): Promise<SandboxRecord> {
    const plan = await planCreate(this.#sc, req, ctx);
    return this.#locks.run(plan.id, () => createSandbox(this.#sc, plan, req, ctx));
  }

  /** Ends a sandbox. A second kill while one runs is `conflict`; a dead one is `invalid_state`. */
  async kill(id: string, ctx: OpCtx = {}, reason = 'killed'): Promise<SandboxRecord> {
    this.get(id);
    // A kill waits for a snapshot, pause or resume in progress; a second kill is refused.
    return killSandbox(this.#sc, id, ctx, reason, (fn) => this.#locks.run(id, fn));
  }

  /**
   * Pause = snapshot + stop the VM; the sandbox keeps its id and resumes from that snapshot.
   * `memory: false` keeps the filesystem only (its resume reboots the guest).
   */
  async pause(id: string, ctx: OpCtx = {}, opts: { memory?: boolean } = {}): Promise<SandboxRecord> {
    this.get(id);
    await this.#locks.run(id, () => pauseSandbox(this.#sc, id, ctx, opts));
    return this.get(id);
  }

  /**
   * Restores a paused sandbox under its own id and token; its end time restarts at `timeoutS`.
   * `memory: false` cold-boots it on its pause's disk even if that pause kept memory.
   */
  async resume(
    id: string,
    opts: { timeoutS?: number; memory?: boolean } = {},
    ctx: OpCtx = {},
  ): Promise<SandboxRecord> {
    const timeoutS =
      opts.timeoutS === undefined
        ? DEFAULT_TIMEOUT_S
        : validateInt('timeout', opts.timeoutS, 1, MAX_TIMEOUT_S);
    this.get(id);
    return this.#locks.run(id, () => resumeSandbox(this.#sc, id, timeoutS, ctx, { memory: opts.memory }));
  }

  get(id: string): SandboxRecord {
    return q.getSandbox(this.#sc, id);
  }

  list(filter: SandboxFilter = {}, page?: PageOpts): Page<SandboxRecord> {
    return q.listSandboxes(this.#sc, filter, page);
  }

  logs(id: string, page?: PageOpts): Page<EventRecord> {
    return q.sandboxLogs(this.#sc, id, page);
  }

  /**
   * Replaces a running or paused sandbox's egress rules (E2B's updateNetwork: the whole set,
   * what is omitted is cleared). Running: applied through `deps.egress` before being stored, so
   * a failure changes nothing; paused: stored, in force from its resume. See sandbox/network.ts.
   */
  async updateNetwork(id: string, egress: EgressRules, ctx: OpCtx = {}): Promise<SandboxRecord> {
    this.get(id);
    return this.#locks.run(id, () => updateNetwork(this.#sc, id, egress, ctx));
  }

  /** Sets the sandbox to end `timeoutS` seconds from now (E2B's setTimeout). */
  setTimeout(id: string, timeoutS: number): SandboxRecord {
    return setEndTime(this.#sc, id, timeoutS);
  }

  /** The size of a sandbox's disk as its guest sees it (MiB; the most its overlay can hold), if known. */
  diskSizeMiB(s: SandboxRecord): number | undefined {
    return q.diskSizeMiB(this.#sc, s);
  }

  async exec(id: string, cmd: string, opts: ExecOpts = {}, ctx: OpCtx = {}): Promise<ExecResult> {
    return exec(this.#sc, id, cmd, opts, ctx);
  }

  /** Streams `input` to the stdin of a command started by `exec` with `stdin: true`, then closes it. */
  async writeStdin(
    id: string,
    pid: number,
    input: AsyncIterable<Uint8Array>,
    o: { signal?: AbortSignal } = {},
    ctx: OpCtx = {},
  ): Promise<{ ended: boolean }> {
    return writeStdin(this.#sc, id, pid, input, o, ctx);
  }

  /** The default user and cwd of a running sandbox's later commands (kept by its snapshots). */
  async setGuestDefaults(
    id: string,
    d: { user?: string | undefined; workdir?: string | undefined },
    ctx: OpCtx = {},
  ): Promise<void> {
    return setGuestDefaults(this.#sc, id, d, ctx);
  }

  // ---- workspaces (src/daemon/workspace)

  /**
   * Streams a repository's tar (`body`, made by the sdk) into a running sandbox at the guest path
   * and records the push (journalled; an event). Waits for another push or export of the sandbox.
   */
  async pushWorkspace(id: string, body: Readable, opts: PushOpts, ctx: OpCtx = {}): Promise<WorkspaceView> {
    checkPushOpts(opts);
    this.get(id);
    return this.#workspaceLocks.run(id, () => pushWorkspace(this.#sc, id, body, opts, ctx));
  }

  /** Streams a workspace's patch since its base into `sink`; waits for a push of the sandbox. */
  async exportWorkspace(
    id: string,
    opts: ExportOpts,
    sink: ExportSink,
    ctx: OpCtx = {},
  ): Promise<WorkspaceExportHead> {
    checkExportOpts(opts);
    this.get(id);
    return this.#workspaceLocks.run(id, () => exportWorkspace(this.#sc, id, opts, sink, ctx));
  }

  /**
   * Where a running sandbox's guest agent answers (`http://<host>:<forwarded port>`), for the
   * envd proxy. The port is cached per VM; `forgetAgent` drops it when a connection fails.
   * `not_found` for an unknown sandbox, `invalid_state` for one that is not running.
   */
  async agent(id: string): Promise<{ sandbox: SandboxRecord; baseUrl: string }> {
    return agent(this.#sc, id);
  }

  /** Where the host reaches guest port `guestPort` of a running sandbox, published on first use. */
  async guestPort(id: string, guestPort: number): Promise<{ sandbox: SandboxRecord; baseUrl: string }> {
    return guestPortUrl(this.#sc, id, guestPort);
  }

  /** Drops the cached agent address of a sandbox (its VM may have changed). */
  forgetAgent(id: string): void {
    this.#sc.agentPorts.delete(id);
  }

  /** The guest's own CPU, memory and disk figures (envd's /metrics) of a running sandbox. */
  async guestMetrics(id: string, ctx: OpCtx = {}): Promise<GuestMetrics> {
    return guestMetrics(this.#sc, id, ctx);
  }

  // ---- snapshots

  /**
   * Snapshots a running sandbox: its vCPUs stop while device state and RAM are saved and its
   * disk overlay is frozen (the VM goes on over a new overlay), then it runs again.
   */
  async snapshot(id: string, opts: { name?: string } = {}, ctx: OpCtx = {}): Promise<SnapshotRecord> {
    const name = opts.name === undefined ? null : validateName('name', opts.name);
    if (name) q.assertSnapshotNameFree(this.#sc, name);
    this.get(id);
    return this.#locks.run(id, () => takeSnapshot(this.#sc, id, 'snapshot', name, ctx));
  }

  /** Restores a snapshot (id or name) into a new sandbox. */
  async restore(
    snapshot: string,
    req: Omit<CreateRequest, 'template'> = {},
    ctx: OpCtx = {},
  ): Promise<SandboxRecord> {
    const snap = this.getSnapshot(snapshot);
    assertRestorable(snap);
    return await this.create({ ...req, template: snap.id }, ctx);
  }

  /** Snapshot + `count` concurrent restores; each clone's outcome is reported on its own. */
  async fork(id: string, opts: { count: number; timeoutS?: number }, ctx: OpCtx = {}): Promise<ForkResult> {
    const count = validateInt('count', opts.count, 1, MAX_FORK);
    const src = this.get(id);
    const snap = await this.#locks.run(id, () => takeSnapshot(this.#sc, id, 'fork', null, ctx));
    return forkClones(this.#sc, src, snap, { count, timeoutS: opts.timeoutS }, ctx, (r, c) =>
      this.create(r, c),
    );
  }

  getSnapshot(idOrName: string): SnapshotRecord {
    return q.getSnapshot(this.#sc, idOrName);
  }

  listSnapshots(filter: { sandboxId?: string; kind?: SnapshotKind } = {}): SnapshotRecord[] {
    return q.listSnapshots(this.#sc, filter);
  }

  /**
   * Deletes a snapshot: at once gone for users (not listed, not restorable, its name free), even
   * while its source or restores run on its disk layer; the layer is reclaimed when nothing
   * stands on it (sandbox/gc.ts). Refused for a template's own snapshot and a paused sandbox's.
   */
  async deleteSnapshot(idOrName: string, ctx: OpCtx = {}): Promise<void> {
    await deleteSnapshot(this.#sc, this.getSnapshot(idOrName), ctx);
  }

  /**
   * Writes a snapshot as one portable archive to `out`: memory, device state, the disk
   * flattened to one standalone layer, kernel and initrd, and a manifest with SHA-256s.
   */
  async exportSnapshot(idOrName: string, out: NodeJS.WritableStream, ctx: OpCtx = {}): Promise<void> {
    await exportSnapshot(this.#sc, this.getSnapshot(idOrName), out, ctx);
  }

  /**
   * Imports an archive written by exportSnapshot (from this or another host), verified before
   * anything is recorded. Keeps the snapshot's id and name; an id or name already here is refused.
   */
  async importSnapshot(input: Readable, ctx: OpCtx = {}): Promise<SnapshotRecord> {
    return importSnapshot(this.#sc, input, ctx);
  }

  /** Template GC: removes an unused hidden template and/or snapshot, journalled (sandbox/collect.ts). */
  async removeUnused(t: UnusedTarget, stillUnused: () => boolean, ctx: OpCtx = {}): Promise<RemoveOutcome> {
    return removeUnused(this.#sc, t, stillUnused, ctx);
  }

  /** Flattens disk chains longer than MAX_DISK_CHAIN onto their template's layer (see gc.ts). */
  async flattenChains(): Promise<string[]> {
    return flattenChains(this.#sc);
  }

  // ---- monitors and recovery

  /** CPU, memory (RSS, PSS) and disk of a live sandbox: the background's recent sample, or a fresh one. */
  async stats(id: string): Promise<SandboxStats> {
    return this.#stats.stats(id);
  }

  /** The background's samples of a sandbox over the last hour, oldest first (at most STATS_HISTORY). */
  statsHistory(id: string): SandboxStats[] {
    return this.#stats.history(id);
  }

  /** The accelerator VMs run under, as the last sampled VM said (undefined before any ran). */
  accel(): 'kvm' | 'tcg' | undefined {
    return this.#stats.accel();
  }

  /** Memory committed to live sandboxes and the admission limit (daemon/admission.ts). */
  memoryCommitment(): { committedMiB: number; limitMiB: number | null; hostMiB: number | null } {
    return memoryCommitment(this.#sc);
  }

  /** Samples every running sandbox (the background does this every STATS_EVERY_MS). */
  async sampleAll(): Promise<void> {
    return this.#stats.sampleAll();
  }

  /** Ends every running sandbox past its end time: pauses it (autoPause) or kills it. */
  async reapExpired(): Promise<string[]> {
    return reapExpired(this.#sc, {
      pause: (id, memory) => this.pause(id, {}, { memory }),
      kill: (id, r) => this.kill(id, {}, r),
    });
  }

  /**
   * Marks running sandboxes whose VM died (killed from outside, crashed) dead, with the reason
   * its console gives, and cleans them; sets or clears conditions (unresponsive agent, VM stopped
   * on a full disk). See LivenessWatcher. Resolves with the ids found dead.
   */
  async checkLiveness(): Promise<string[]> {
    return this.#sc.watcher.check();
  }

  /** Start-up recovery after a crash (recovery/reconcile.ts, which lists what it assumes). */
  async reconcile(): Promise<ReconcileReport> {
    return reconcile(this.#sc);
  }

  /** Starts the reaper, the liveness watcher, the stats sampler and chain flattening. */
  startBackground(opts: LoopOpts = {}): void {
    this.#timers.push(
      ...startLoops(
        this.#sc.log,
        {
          reap: () => this.reapExpired(),
          liveness: () => this.checkLiveness(),
          sampleStats: () => this.sampleAll(),
          flatten: () => this.flattenChains(),
          purge: (retentionMs) =>
            Promise.resolve().then(() => {
              const r = purgeEndedRecords(this.#sc.store, this.#sc.now, retentionMs);
              if (r.sandboxes.length) this.#sc.log.info(r, 'ended records purged');
            }),
        },
        opts,
      ),
    );
    // The warm pool refills after every take and setting change; this pass also catches what
    // changed otherwise (a template built or rebuilt, a member whose VM stopped, room freed).
    this.#pool.open();
    this.#pool.kick();
    const refill = setInterval(() => {
      this.#pool.kick();
    }, opts.warmPoolEveryMs ?? WARM_POOL_EVERY_MS);
    refill.unref();
    this.#timers.push(refill);
  }

  /** Stops the background loops; no new warm pool fill starts (`backgroundSettled` waits for one in progress). */
  stopBackground(): void {
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    this.#pool.stop();
  }

  /** Resolves when no warm pool pass runs any more (after stopBackground). */
  async backgroundSettled(): Promise<void> {
    await this.#pool.settled();
  }
}
