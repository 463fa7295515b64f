import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, link, mkdir, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { basename, join } from 'node:path';
import type { Logger } from 'pino';
import type {
  ArtifactRecord,
  EventRecord,
  OperationRecord,
  SandboxRecord,
  SnapshotKind,
  SnapshotRecord,
  TemplateRecord,
} from '../core/domain.ts';
import { BOOTSTRAP_KERNEL_ARG, tokenSha256 } from '../core/envd-auth.ts';
import { KilnError, asKilnError, invalidArgument } from '../core/errors.ts';
import type { Failpoint } from '../core/failpoint.ts';
import { writeFileAtomic } from '../core/fs-atomic.ts';
import { newId } from '../core/ids.ts';
import { procUsage } from '../core/proc.ts';
import { validateInt, validateMemoryMiB, validateName, validateVcpus } from '../core/validate.ts';
import type { Page, PageOpts, SandboxFilter, Store } from '../store/store.ts';
import type { VmmDriver, VmSpec } from '../vmm/driver.ts';
import { waitForHttp } from '../vmm/health.ts';
import {
  waitGuestReady,
  type ExecOpts,
  type ExecResult,
  type GuestClient,
  type GuestMetrics,
  type GuestTimeouts,
  type HttpGuestClientOpts,
} from './guest-client.ts';
import { OpRun, runUndo } from './journal.ts';
import type { DiskAdmission } from './admission.ts';
import { CONSOLE_LINES, LivenessWatcher, consoleExcerpt, exitReason, type LivenessOpts } from './liveness.ts';
import { KeyedLock } from './locks.ts';
import { sees, seesTemplate, type Caller } from './scope.ts';
import {
  ARCHIVE_FILES,
  ARCHIVE_FORMAT,
  MANIFEST,
  artifact,
  packArchive,
  unpackArchive,
  type ArchiveManifest,
} from './snapshot-archive.ts';

/** The boot files of a guest image (what images/ builds). */
export interface BootImage {
  key: string;
  kernel: string;
  initrd: string;
  rootfs: string;
}

export interface SandboxServiceDeps {
  store: Store;
  driver: VmmDriver;
  guest: (o: HttpGuestClientOpts) => GuestClient;
  /** Resolves an image key recorded on a template back to its files. */
  image: (key: string) => Promise<BootImage>;
  /** Holds snapshots/<id>/ (template RAM, device state, frozen disk). */
  dataDir: string;
  log: Logger;
  now?: () => number;
  /** Refuse creates once live guests' memory would pass hostMemoryMiB x overcommitRatio. */
  capacity?: { hostMemoryMiB: number; overcommitRatio: number };
  /** Refuse creates and resumes whose disk could not grow to its size (src/daemon/admission.ts). */
  disk?: DiskAdmission;
  /** How long a restored guest may take to answer (default 60 s). */
  readyTimeoutMs?: number;
  /** Crash tests: called after every journalled step (see core/failpoint.ts). */
  failpoint?: Failpoint | undefined;
  /** Deadlines of calls into guests (defaults: guest-client's DEFAULT_GUEST_TIMEOUTS). */
  guestTimeouts?: Partial<GuestTimeouts>;
  /** How the liveness watcher probes guests and retries VMs stopped on a full disk. */
  liveness?: LivenessOpts;
}

export interface CreateRequest {
  template: string;
  /** Seconds until the reaper ends it (E2B default 300). */
  timeoutS?: number;
  metadata?: Record<string, string>;
  envVars?: Record<string, string>;
  memoryMiB?: number;
  vcpus?: number;
  autoPause?: boolean;
  /** With autoPause: traffic for the paused sandbox resumes it. */
  autoResume?: boolean;
  allowInternet?: boolean;
}

export interface OpCtx {
  /** The request's op id, minted at the API edge. */
  opId?: string;
  /** The API key acting (E2B API): what it creates is its own, it sees only its own unless admin. */
  caller?: Caller | undefined;
}

export interface SandboxStats {
  sandboxId: string;
  cpuPct: number;
  rssBytes: number;
  pssBytes: number;
  diskBytes: number;
  memoryMiB: number;
  at: string;
}

export interface ReconcileReport {
  /** Sandboxes kept: running with a live VM, or paused. */
  adopted: string[];
  dead: string[];
  /** VMs no record explains, killed. */
  orphans: string[];
  /** Interrupted operations taken back. */
  unwound: string[];
  /** Interrupted snapshots finished (they were past their point of no return). */
  finished: string[];
  /** Snapshot directories no record explains, removed. */
  orphanSnapshotDirs: string[];
  /** Snapshots past their point of no return that could not be finished (kept for the next start). */
  stuck: string[];
  /**
   * Live sandboxes whose VM could not be checked (a host error such as EMFILE, a QEMU that does
   * not answer): left as they are for the liveness watcher, never declared dead on that.
   */
  unchecked: string[];
}

/** True when a snapshot or pause op got past its point of no return (it is finished, not undone). */
function pastPointOfNoReturn(op: OperationRecord): boolean {
  return (
    (op.kind === 'snapshot' && op.steps.some((st) => st.name === POINT_OF_NO_RETURN.snapshot)) ||
    (op.kind === 'pause' && op.steps.some((st) => st.name === POINT_OF_NO_RETURN.pause))
  );
}

export const DEFAULT_TIMEOUT_S = 300;
/** How often the background samples every sandbox's CPU, memory and disk. */
export const STATS_EVERY_MS = 5000;
export const MAX_TIMEOUT_S = 24 * 3600;
const LIVE = ['creating', 'running', 'pausing', 'paused', 'resuming', 'killing'] as const;

/** What a snapshot directory records about itself while it is being taken (for roll-forward). */
interface SnapshotMeta {
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
}

const META_FILE = 'snapshot.json';
/** The journal step after which a snapshot (or pause) is finished, never undone. */
const POINT_OF_NO_RETURN = { snapshot: 'disk frozen', pause: 'vm stopped' } as const;
/** Device state + RAM as saved from a running sandbox, before the RAM moves into `memory`. */
const FULL_STATE = 'state.full';
const DISK_LAYER = 'disk.qcow2';
/** A fork makes at most this many clones in one call. */
export const MAX_FORK = 32;
/** Disk chains longer than this (layers above the base image) are flattened. */
export const MAX_DISK_CHAIN = 4;

/** The records of a snapshot directory's memory, state and disk layer. */
async function snapshotArtifacts(dir: string): Promise<ArtifactRecord[]> {
  return [
    await artifact(dir, 'memory', 'memory'),
    await artifact(dir, 'state', 'state'),
    await artifact(dir, 'disk', DISK_LAYER),
  ];
}

/**
 * A snapshot's agent must hold a token only kilnd knows until /init (issue 10). Templates built
 * before bootstrap tokens existed hold none: they must be rebuilt.
 */
function assertGuestToken(snap: SnapshotRecord, tpl: TemplateRecord): void {
  if (snap.guestToken) return;
  throw new KilnError(
    'invalid_state',
    snap.kind === 'template'
      ? `template "${tpl.name}" was built by an older kiln whose guest agent takes requests from anyone until it is set up; rebuild it: kiln template build --name ${tpl.name}`
      : `snapshot ${snap.id} has no guest token, so its guest agent would take requests from anyone until it is set up; it cannot be restored`,
    { details: { template: tpl.name, snapshotId: snap.id } },
  );
}

function stringMap(field: string, v: unknown): Record<string, string> {
  if (v === undefined) return {};
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw invalidArgument(field, 'must be an object of strings');
  for (const [k, x] of Object.entries(v)) {
    if (typeof x !== 'string') throw invalidArgument(field, `value of "${k}" must be a string`);
  }
  return v as Record<string, string>;
}

/**
 * The sandbox lifecycle: templates are snapshots of a booted guest; a sandbox is a restore of
 * one. Every multi-step operation is journalled with an undo per step; one lock per sandbox.
 */
export class SandboxService {
  readonly #d: SandboxServiceDeps;
  readonly #locks = new KeyedLock();
  readonly #now: () => number;
  readonly #samples = new Map<string, { ticks: number; at: number }>();
  readonly #latestStats = new Map<string, SandboxStats>();
  /** Sandbox id -> its agent's forwarded host port, for the VM started at `startedAt`. */
  readonly #killing = new Set<string>();
  readonly #agentPorts = new Map<string, { host: string; port: number; startedAt: string | null }>();
  #timers: NodeJS.Timeout[] = [];
  readonly #liveness: LivenessWatcher;

  constructor(deps: SandboxServiceDeps) {
    // Every guest client gets the configured deadlines.
    this.#d = deps.guestTimeouts
      ? { ...deps, guest: (o) => deps.guest({ timeouts: deps.guestTimeouts, ...o }) }
      : deps;
    this.#now = deps.now ?? Date.now;
    this.#liveness = new LivenessWatcher(
      {
        store: deps.store,
        driver: deps.driver,
        guest: this.#d.guest,
        log: deps.log,
        now: this.#now,
        agentUrl: (info) => `http://${info.agent.host}:${info.agent.port}`,
        isHeld: (id) => this.#locks.isHeld(id),
        kill: (id, reason) => this.kill(id, {}, reason),
      },
      deps.liveness,
    );
  }

  #snapDir(id: string): string {
    return join(this.#d.dataDir, 'snapshots', id);
  }

  // ---- templates

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
    validateName('template', name);
    validateMemoryMiB(res.memoryMiB);
    validateVcpus(res.vcpus);
    const log = this.#d.log.child({ opId: ctx.opId, template: name });
    const run = new OpRun(this.#d, 'template', name, ctx.opId);
    try {
      const staging = join(this.#d.dataDir, 'snapshots', `.staging-${run.op.id}`);
      await mkdir(staging, { recursive: true });
      run.step('staging dir', { action: 'remove-path', path: staging });
      const vmId = `tplbuild-${run.op.id.slice(3, 15)}`;
      run.step('template VM', { action: 'kill-vm', vmId });
      // The agent boots holding only this secret's hash (kernel command line): from its first
      // instant to each sandbox's /init, which presents the secret, it obeys no one else.
      const bootstrap = randomBytes(32).toString('hex');
      const info = await this.#d.driver.start({
        id: vmId,
        boot: {
          kernel: image.kernel,
          initrd: image.initrd,
          rootfs: image.rootfs,
          kernelArgs: [`${BOOTSTRAP_KERNEL_ARG}=${tokenSha256(bootstrap)}`],
        },
        resources: { memoryMiB: res.memoryMiB, vcpus: res.vcpus },
        network: { kind: 'open' },
        ramFile: join(staging, 'memory'),
      });
      await waitForHttp(`http://${info.agent.host}:${info.agent.port}/health`, {
        timeoutMs: 180_000,
        alive: async () => (await this.#d.driver.status(vmId)).state !== 'stopped',
      });
      const saved = await this.#d.driver.saveState(vmId, join(staging, 'state'));
      await this.#d.driver.stop(vmId, { keepOverlayAs: join(staging, 'disk.qcow2') });
      const artifacts = await snapshotArtifacts(staging);
      const snapId =
        'snap-' +
        createHash('sha256')
          .update(artifacts.map((a) => a.sha256).join(':'))
          .digest('hex')
          .slice(0, 24);
      await rename(staging, this.#snapDir(snapId));
      run.step('snapshot dir', { action: 'remove-path', path: this.#snapDir(snapId) });
      const existing = this.#d.store.listTemplates().find((t) => t.name === name);
      const tpl: TemplateRecord = {
        id: existing?.id ?? newId('tpl'),
        name,
        imageKey: image.key,
        memoryMiB: res.memoryMiB,
        vcpus: res.vcpus,
        snapshotId: snapId,
        createdAt: new Date(this.#now()).toISOString(),
        // Built by kiln itself: every key may create from it.
        ownerKeyId: existing?.ownerKeyId ?? null,
      };
      const snap: SnapshotRecord = {
        id: snapId,
        name: null,
        kind: 'template',
        sandboxId: null,
        templateId: tpl.id,
        memoryMiB: res.memoryMiB,
        vcpus: res.vcpus,
        parentId: null,
        artifacts,
        guestToken: bootstrap,
        pauseMs: null,
        createdAt: tpl.createdAt,
        ownerKeyId: null,
      };
      this.#d.store.insertSnapshot(snap);
      run.step('snapshot record', { action: 'delete-snapshot', snapshotId: snapId });
      this.#d.store.putTemplate(tpl);
      run.done();
      log.info({ snapshotId: snapId, pauseMs: Math.round(saved.pauseMs) }, 'template built');
      return tpl;
    } catch (e) {
      await run.fail(e);
      throw e;
    }
  }

  // ---- sandboxes

  /**
   * Creates a sandbox by restoring `req.template`: a template (name or id) or a snapshot (id or
   * name) taken from a sandbox. New id, new access token, clock re-synced.
   */
  async create(req: CreateRequest, ctx: OpCtx = {}): Promise<SandboxRecord> {
    const { tpl, snap } = this.#resolveSource(req.template, ctx.caller);
    assertGuestToken(snap, tpl);
    // RAM and CPUs come back from the snapshot: they cannot differ from it.
    if (req.memoryMiB !== undefined && validateMemoryMiB(req.memoryMiB) !== snap.memoryMiB) {
      throw invalidArgument(
        'memoryMiB',
        `must be ${snap.memoryMiB} MiB, the memory of "${req.template}" (sandboxes restore its memory snapshot)`,
      );
    }
    if (req.vcpus !== undefined && validateVcpus(req.vcpus) !== snap.vcpus) {
      throw invalidArgument(
        'vcpus',
        `must be ${snap.vcpus}, as in "${req.template}" (sandboxes restore its snapshot)`,
      );
    }
    const timeoutS =
      req.timeoutS === undefined ? DEFAULT_TIMEOUT_S : validateInt('timeout', req.timeoutS, 1, MAX_TIMEOUT_S);
    const metadata = stringMap('metadata', req.metadata);
    const source = snap.sandboxId ? this.#d.store.getSandbox(snap.sandboxId) : undefined;
    const envVars = { ...source?.envVars, ...stringMap('envVars', req.envVars) };
    this.#admit(snap.memoryMiB, snap);
    const id = newId('sbx', 16);
    const token = randomBytes(24).toString('hex');
    const log = this.#d.log.child({ opId: ctx.opId, sandboxId: id });
    return this.#locks.run(id, async () => {
      const run = new OpRun(this.#d, 'create', id, ctx.opId);
      try {
        const now = this.#now();
        this.#d.store.insertSandbox({
          id,
          templateId: tpl.id,
          state: 'creating',
          memoryMiB: snap.memoryMiB,
          vcpus: snap.vcpus,
          metadata,
          envVars,
          accessToken: token,
          createdAt: new Date(now).toISOString(),
          startedAt: null,
          endAt: new Date(now + timeoutS * 1000).toISOString(),
          autoPause: req.autoPause ?? false,
          autoResume: req.autoResume ?? false,
          allowInternet: req.allowInternet ?? true,
          endReason: null,
          sourceSnapshotId: snap.id,
          ownerKeyId: ctx.caller?.keyId ?? null,
          condition: null,
        });
        run.step('sandbox record', { action: 'delete-sandbox', sandboxId: id });
        const times = await this.#bootFrom(
          id,
          snap,
          { token, envVars, allowInternet: req.allowInternet ?? true },
          run,
          ctx,
        );
        const rec = this.#d.store.updateSandbox(
          id,
          { state: 'running', startedAt: new Date(this.#now()).toISOString() },
          ['creating'],
        );
        run.done();
        this.#d.store.appendEvent(id, 'info', 'sandbox created', {
          template: tpl.name,
          snapshot: snap.kind === 'template' ? null : snap.id,
          opId: ctx.opId ?? null,
        });
        log.info({ template: tpl.name, snapshot: snap.id, ...times }, 'sandbox created');
        return rec;
      } catch (e) {
        log.warn({ err: e }, 'create failed; unwinding');
        await run.fail(e);
        throw e;
      }
    });
  }

  /**
   * A template (name or id) or a restorable snapshot (id or name), and the template behind it.
   * Another key's template or snapshot is not found, exactly like one that does not exist.
   */
  #resolveSource(ref: string, caller: Caller | undefined): { tpl: TemplateRecord; snap: SnapshotRecord } {
    validateName('template', ref);
    let tpl: TemplateRecord | undefined;
    try {
      tpl = this.#d.store.getTemplate(ref);
    } catch (e) {
      if (!(e instanceof KilnError && e.code === 'not_found')) throw e;
    }
    if (tpl && !seesTemplate(caller, tpl)) tpl = undefined;
    if (tpl) {
      if (!tpl.snapshotId)
        throw new KilnError('invalid_state', `template "${tpl.name}" has no snapshot yet; build it first`);
      return { tpl, snap: this.#d.store.getSnapshot(tpl.snapshotId) };
    }
    let snap: SnapshotRecord | undefined;
    try {
      snap = this.#d.store.getSnapshot(ref);
    } catch (e) {
      if (!(e instanceof KilnError && e.code === 'not_found')) throw e;
    }
    if (!snap || snap.kind === 'pause' || !sees(caller, snap.ownerKeyId))
      throw new KilnError('not_found', `template or snapshot "${ref}" does not exist`, {
        details: { template: ref },
      });
    return { tpl: this.#d.store.getTemplate(snap.templateId), snap };
  }

  /**
   * Restores `snap` into VM `id`, waits for its agent and /init's it (the new token, env, the
   * host's clock). Journals the VM so a failure or crash kills it.
   */
  async #bootFrom(
    id: string,
    snap: SnapshotRecord,
    g: { token: string; envVars: Record<string, string>; allowInternet: boolean },
    run: OpRun,
    ctx: OpCtx,
  ): Promise<{ restoreMs: number; readyMs: number; initMs: number }> {
    const spec = await this.#restoreSpec(id, snap, g.allowInternet);
    run.step('vm', { action: 'kill-vm', vmId: id });
    const t0 = performance.now();
    const info = await this.#d.driver.start(spec);
    const tRestored = performance.now();
    const base = `http://${info.agent.host}:${info.agent.port}`;
    const guest = this.#d.guest({
      baseUrl: base,
      accessToken: g.token,
      ...(ctx.opId ? { opId: ctx.opId } : {}),
    });
    // Readiness and /init on one connection of the guest client (see waitGuestReady).
    await waitGuestReady(guest, {
      what: `${base}/health`,
      timeoutMs: this.#d.readyTimeoutMs ?? 60_000,
      alive: async () => (await this.#d.driver.status(id)).state !== 'stopped',
    });
    const tReady = performance.now();
    await guest.init(
      {
        accessToken: g.token,
        envVars: g.envVars,
        defaultUser: 'user',
        timestamp: new Date(this.#now()).toISOString(),
      },
      snap.guestToken ?? undefined,
    );
    const tInit = performance.now();
    const ms = (a: number, b: number): number => Math.round(b - a);
    return { restoreMs: ms(t0, tRestored), readyMs: ms(tRestored, tReady), initMs: ms(tReady, tInit) };
  }

  async #restoreSpec(id: string, snap: SnapshotRecord, allowInternet: boolean): Promise<VmSpec> {
    const dir = this.#snapDir(snap.id);
    const file = (kind: ArtifactRecord['kind']): string | undefined => {
      const a = snap.artifacts.find((x) => x.kind === kind);
      return a ? join(dir, a.path) : undefined;
    };
    const need = (kind: ArtifactRecord['kind']): string => {
      const f = file(kind);
      if (!f) throw new KilnError('internal', `snapshot ${snap.id} has no ${kind} artifact`);
      return f;
    };
    // An imported snapshot carries its own kernel and initrd; others use their template's image.
    const kernel = file('kernel');
    const initrd = file('initrd');
    const image =
      kernel && initrd
        ? { kernel, initrd, rootfs: need('disk') }
        : await this.#d.image(this.#d.store.getTemplate(snap.templateId).imageKey);
    return {
      id,
      boot: { kernel: image.kernel, initrd: image.initrd, rootfs: image.rootfs },
      resources: { memoryMiB: snap.memoryMiB, vcpus: snap.vcpus },
      network: { kind: allowInternet ? 'open' : 'restricted' },
      diskLayer: need('disk'),
      restore: { snapshot: { stateFile: need('state'), ramFile: need('memory') } },
    };
  }

  // ---- snapshots of running sandboxes

  /**
   * Snapshots a running sandbox: its vCPUs stop while device state and RAM are saved and its
   * disk overlay is frozen (the VM goes on over a new overlay, no copy), then it runs again. The
   * RAM is then moved into a memory file (by loading the saved state into a paused helper VM and
   * saving it again), so restores map it copy-on-write like a template's.
   */
  async snapshot(id: string, opts: { name?: string } = {}, ctx: OpCtx = {}): Promise<SnapshotRecord> {
    const name = opts.name === undefined ? null : validateName('name', opts.name);
    if (name) this.#assertSnapshotNameFree(name);
    this.get(id);
    return this.#locks.run(id, () => this.#snapshotLocked(id, 'snapshot', name, ctx));
  }

  #assertSnapshotNameFree(name: string): void {
    const taken = (() => {
      try {
        this.#d.store.getSnapshot(name);
        return true;
      } catch {
        return false;
      }
    })();
    if (taken) throw new KilnError('already_exists', `a snapshot named "${name}" already exists`);
    // Names share one namespace with templates (both are what a create restores).
    if (this.#d.store.listTemplates().some((t) => t.name === name || t.id === name))
      throw new KilnError('already_exists', `"${name}" is a template's name; pick another snapshot name`);
  }

  async #snapshotLocked(
    id: string,
    kind: 'snapshot' | 'fork' | 'pause',
    name: string | null,
    ctx: OpCtx,
  ): Promise<SnapshotRecord> {
    const s = this.#d.store.getSandbox(id);
    if (s.state !== 'running') {
      throw new KilnError(
        'invalid_state',
        `sandbox ${id} is ${s.state}; ${kind === 'pause' ? 'pausing' : 'a snapshot'} needs running`,
      );
    }
    // Again under the lock: two snapshots of one sandbox may have asked for the same name.
    if (name) this.#assertSnapshotNameFree(name);
    const caps = this.#d.driver.capabilities();
    if (!caps.memorySnapshots || !caps.cowRamSharing || (kind !== 'pause' && !caps.liveDiskFreeze))
      throw new KilnError('invalid_state', `this host's VMM driver cannot ${kind} a running sandbox`);
    const log = this.#d.log.child({ opId: ctx.opId, sandboxId: id });
    const run = new OpRun(this.#d, kind === 'pause' ? 'pause' : 'snapshot', id, ctx.opId);
    const meta: SnapshotMeta = {
      id: newId('snap', 16),
      name,
      kind,
      sandboxId: id,
      templateId: s.templateId,
      memoryMiB: s.memoryMiB,
      vcpus: s.vcpus,
      parentId: s.sourceSnapshotId,
      guestToken: s.accessToken,
      pauseMs: null,
      // A pause stays the sandbox's; a snapshot or fork is the key's that takes it (kiln's own or
      // the native API's: the sandbox's key's).
      ownerKeyId: kind === 'pause' ? s.ownerKeyId : (ctx.caller?.keyId ?? s.ownerKeyId),
    };
    const dir = this.#snapDir(meta.id);
    let committed = false;
    try {
      if (kind === 'pause') {
        this.#d.store.updateSandbox(id, { state: 'pausing' }, ['running']);
        this.#agentPorts.delete(id);
      }
      await mkdir(dir, { recursive: true });
      run.step('snapshot dir', { action: 'remove-path', path: dir });
      await writeFileAtomic(join(dir, META_FILE), JSON.stringify(meta, null, 2));
      run.step('source paused', { action: 'resume-vm', vmId: id });
      const t0 = performance.now();
      await this.#d.driver.saveState(id, join(dir, FULL_STATE));
      // The point of no return is journalled before the step that crosses it: a crash inside
      // that step is finished at start-up (stop and freezeDisk pick up where they were).
      if (kind === 'pause') {
        run.step(POINT_OF_NO_RETURN.pause, { action: 'none' });
        await this.#d.driver.stop(id, { keepOverlayAs: join(dir, DISK_LAYER) });
        committed = true;
      } else {
        run.step(POINT_OF_NO_RETURN.snapshot, { action: 'none' });
        await this.#d.driver.freezeDisk(id, join(dir, DISK_LAYER));
        // From here the source's disk sits on the new layer: the snapshot is finished, not undone.
        committed = true;
        await this.#d.driver.resume(id);
      }
      meta.pauseMs = Math.round((performance.now() - t0) * 10) / 10;
      const snap = await this.#completeSnapshot(meta);
      this.#d.store.updateSandbox(id, {
        sourceSnapshotId: snap.id,
        ...(kind === 'pause' ? { state: 'paused' as const } : {}),
      });
      run.done();
      this.#d.store.appendEvent(id, 'info', kind === 'pause' ? 'sandbox paused' : 'snapshot taken', {
        snapshotId: snap.id,
        pauseMs: meta.pauseMs,
        opId: ctx.opId ?? null,
      });
      log.info(
        { snapshotId: snap.id, kind, pauseMs: meta.pauseMs },
        kind === 'pause' ? 'sandbox paused' : 'snapshot taken',
      );
      await this.#collectInternalSnapshots();
      return snap;
    } catch (e) {
      log.warn({ err: e, committed }, 'snapshot failed');
      if (!committed) {
        // The stop or freeze failed and took itself back: undo the rest.
        await run.fail(e);
        if (kind === 'pause' && this.#d.store.getSandbox(id).state === 'pausing')
          this.#d.store.updateSandbox(id, { state: 'running' });
        throw e;
      }
      // Past the point of no return: finish it now if possible, else at the next start-up.
      if (await this.#rollForwardSnapshot(this.#d.store.getOperation(run.op.id))) {
        this.#d.store.finishOperation(run.op.id, 'done');
        return this.#d.store.getSnapshot(meta.id);
      }
      log.error({ err: e, opId: run.op.id }, 'snapshot could not be completed; the next start-up retries');
      throw e;
    }
  }

  /**
   * Turns a snapshot directory holding the full saved state (device state + RAM) and the frozen
   * disk into a restorable snapshot: RAM moved into a memory file, small device state, hashes,
   * the record. Idempotent: start-up reconciliation re-runs it for an interrupted snapshot.
   */
  async #completeSnapshot(meta: SnapshotMeta): Promise<SnapshotRecord> {
    const dir = this.#snapDir(meta.id);
    const existing = this.#d.store
      .listSnapshots({ sandboxId: meta.sandboxId ?? undefined })
      .find((x) => x.id === meta.id);
    if (existing) return existing;
    // A snapshot of a sandbox restored from an imported snapshot keeps that one's boot files.
    const parent = meta.parentId ? this.#d.store.getSnapshot(meta.parentId) : undefined;
    const carried = (['kernel', 'initrd'] as const).flatMap((kind) => {
      const a = parent?.artifacts.find((x) => x.kind === kind);
      return a && parent
        ? [{ kind, from: join(this.#snapDir(parent.id), a.path), path: ARCHIVE_FILES[kind] }]
        : [];
    });
    for (const c of carried) {
      const to = join(dir, c.path);
      if (!existsSync(to)) await link(c.from, to).catch(() => copyFile(c.from, to));
    }
    if (existsSync(join(dir, FULL_STATE))) {
      const image =
        carried.length === 2
          ? {
              kernel: join(dir, ARCHIVE_FILES.kernel),
              initrd: join(dir, ARCHIVE_FILES.initrd),
              rootfs: join(dir, DISK_LAYER),
            }
          : await this.#d.image(this.#d.store.getTemplate(meta.templateId).imageKey);
      const helper = `cmp-${meta.id.slice(5, 17)}`;
      await runUndo({ action: 'kill-vm', vmId: helper }, this.#d);
      await rm(join(dir, 'memory'), { force: true });
      await rm(join(dir, 'state'), { force: true });
      try {
        await this.#d.driver.start({
          id: helper,
          boot: { kernel: image.kernel, initrd: image.initrd, rootfs: image.rootfs },
          resources: { memoryMiB: meta.memoryMiB, vcpus: meta.vcpus },
          network: { kind: 'restricted' },
          diskLayer: join(dir, DISK_LAYER),
          // The full state's RAM is loaded into a new RAM file, then saved again without it.
          ramFile: join(dir, 'memory'),
          restore: { snapshot: { stateFile: join(dir, FULL_STATE) }, paused: true },
        });
        await this.#d.driver.saveState(helper, join(dir, 'state'));
      } finally {
        await runUndo({ action: 'kill-vm', vmId: helper }, this.#d);
      }
      await rm(join(dir, FULL_STATE));
    }
    const artifacts = await snapshotArtifacts(dir);
    for (const c of carried) artifacts.push(await artifact(dir, c.kind, c.path));
    const snap: SnapshotRecord = {
      id: meta.id,
      name: meta.name,
      kind: meta.kind,
      sandboxId: meta.sandboxId,
      templateId: meta.templateId,
      memoryMiB: meta.memoryMiB,
      vcpus: meta.vcpus,
      parentId: meta.parentId,
      artifacts,
      guestToken: meta.guestToken,
      pauseMs: meta.pauseMs,
      createdAt: new Date(this.#now()).toISOString(),
      ownerKeyId: meta.ownerKeyId ?? null,
    };
    this.#d.store.insertSnapshot(snap);
    return snap;
  }

  /** Restores a snapshot (id or name) into a new sandbox. */
  async restore(
    snapshot: string,
    req: Omit<CreateRequest, 'template'> = {},
    ctx: OpCtx = {},
  ): Promise<SandboxRecord> {
    const snap = this.getSnapshot(snapshot);
    if (snap.kind === 'pause')
      throw new KilnError(
        'invalid_state',
        `snapshot ${snap.id} is a paused sandbox's state; resume that sandbox instead`,
      );
    return await this.create({ ...req, template: snap.id }, ctx);
  }

  /** Snapshot + `count` concurrent restores; each clone's outcome is reported on its own. */
  async fork(
    id: string,
    opts: { count: number; timeoutS?: number },
    ctx: OpCtx = {},
  ): Promise<{ snapshot: SnapshotRecord; results: ({ sandbox: SandboxRecord } | { error: KilnError })[] }> {
    const count = validateInt('count', opts.count, 1, MAX_FORK);
    const src = this.get(id);
    const snap = await this.#locks.run(id, () => this.#snapshotLocked(id, 'fork', null, ctx));
    // The clones belong to the key that forks, else (native API) to the source's key.
    const cloneCtx: OpCtx = {
      ...ctx,
      caller: ctx.caller ?? (src.ownerKeyId ? { keyId: src.ownerKeyId, admin: false } : undefined),
    };
    const settled = await Promise.allSettled(
      Array.from({ length: count }, () =>
        this.create(
          {
            template: snap.id,
            ...(opts.timeoutS !== undefined ? { timeoutS: opts.timeoutS } : {}),
            metadata: src.metadata,
            allowInternet: src.allowInternet,
          },
          cloneCtx,
        ),
      ),
    );
    const results = settled.map((r) =>
      r.status === 'fulfilled' ? { sandbox: r.value } : { error: asKilnError(r.reason) },
    );
    await this.#collectInternalSnapshots();
    return { snapshot: snap, results };
  }

  /** Pause = snapshot + stop the VM; the sandbox keeps its id and resumes from that snapshot. */
  async pause(id: string, ctx: OpCtx = {}): Promise<SandboxRecord> {
    this.get(id);
    await this.#locks.run(id, () => this.#snapshotLocked(id, 'pause', null, ctx));
    return this.get(id);
  }

  /** Restores a paused sandbox under its own id and token; its end time restarts at `timeoutS`. */
  async resume(id: string, opts: { timeoutS?: number } = {}, ctx: OpCtx = {}): Promise<SandboxRecord> {
    const timeoutS =
      opts.timeoutS === undefined
        ? DEFAULT_TIMEOUT_S
        : validateInt('timeout', opts.timeoutS, 1, MAX_TIMEOUT_S);
    this.get(id);
    const log = this.#d.log.child({ opId: ctx.opId, sandboxId: id });
    return this.#locks.run(id, async () => {
      const s = this.#d.store.getSandbox(id);
      if (s.state !== 'paused')
        throw new KilnError('invalid_state', `sandbox ${id} is ${s.state}; resume needs paused`);
      if (!s.sourceSnapshotId) throw new KilnError('internal', `paused sandbox ${id} has no pause snapshot`);
      const snap = this.#d.store.getSnapshot(s.sourceSnapshotId);
      this.#admit(s.memoryMiB, snap);
      const run = new OpRun(this.#d, 'resume', id, ctx.opId);
      try {
        this.#d.store.updateSandbox(id, { state: 'resuming' }, ['paused']);
        // The restored VM forwards the agent on a new host port.
        this.#agentPorts.delete(id);
        const times = await this.#bootFrom(
          id,
          snap,
          { token: s.accessToken, envVars: s.envVars, allowInternet: s.allowInternet },
          run,
          ctx,
        );
        const rec = this.#d.store.updateSandbox(
          id,
          {
            state: 'running',
            startedAt: new Date(this.#now()).toISOString(),
            endAt: new Date(this.#now() + timeoutS * 1000).toISOString(),
            condition: null,
          },
          ['resuming'],
        );
        run.done();
        this.#d.store.appendEvent(id, 'info', 'sandbox resumed', {
          snapshotId: snap.id,
          opId: ctx.opId ?? null,
        });
        log.info({ snapshotId: snap.id, ...times }, 'sandbox resumed');
        return rec;
      } catch (e) {
        log.warn({ err: e }, 'resume failed; unwinding');
        await run.fail(e);
        if (this.#d.store.getSandbox(id).state === 'resuming')
          this.#d.store.updateSandbox(id, { state: 'paused' });
        throw e;
      }
    });
  }

  getSnapshot(idOrName: string): SnapshotRecord {
    validateName('snapshot', idOrName);
    return this.#d.store.getSnapshot(idOrName);
  }

  listSnapshots(filter: { sandboxId?: string; kind?: SnapshotKind } = {}): SnapshotRecord[] {
    return this.#d.store
      .listSnapshots(filter.sandboxId ? { sandboxId: filter.sandboxId } : {})
      .filter((x) => !filter.kind || x.kind === filter.kind);
  }

  /**
   * Deletes a snapshot and its files. Refused while a sandbox or another snapshot depends on its
   * layers, and for a template's own snapshot.
   */
  async deleteSnapshot(idOrName: string, ctx: OpCtx = {}): Promise<void> {
    const snap = this.getSnapshot(idOrName);
    const owner = this.#d.store.listTemplates().find((t) => t.snapshotId === snap.id);
    if (owner)
      throw new KilnError(
        'invalid_state',
        `snapshot ${snap.id} is template "${owner.name}"'s; it goes with the template`,
      );
    await this.#locks.run(`snapshot:${snap.id}`, async () => {
      this.#d.store.deleteSnapshot(snap.id);
      // The record goes first: a crash before the files are gone leaves an orphan directory,
      // which start-up reconciliation removes.
      await rm(this.#snapDir(snap.id), { recursive: true, force: true });
      this.#d.log.info({ opId: ctx.opId, snapshotId: snap.id }, 'snapshot deleted');
    });
  }

  /**
   * Writes a snapshot as one portable archive to `out`: memory, device state, the disk
   * flattened to one standalone layer, kernel and initrd, and a manifest with SHA-256s.
   */
  async exportSnapshot(idOrName: string, out: NodeJS.WritableStream, ctx: OpCtx = {}): Promise<void> {
    const snap = this.getSnapshot(idOrName);
    if (snap.kind === 'pause')
      throw new KilnError(
        'invalid_state',
        `snapshot ${snap.id} is a paused sandbox's state; it cannot be exported`,
      );
    const tmp = join(this.#d.dataDir, 'snapshots', `.staging-export-${newId('x', 12)}`);
    const dir = this.#snapDir(snap.id);
    const file = (kind: ArtifactRecord['kind']): string | undefined => {
      const a = snap.artifacts.find((x) => x.kind === kind);
      return a ? join(dir, a.path) : undefined;
    };
    try {
      await mkdir(tmp, { recursive: true });
      const tpl = this.#d.store.getTemplate(snap.templateId);
      const image = file('kernel') ? undefined : await this.#d.image(tpl.imageKey);
      const sources: Record<keyof typeof ARCHIVE_FILES, string | undefined> = {
        memory: file('memory'),
        state: file('state'),
        disk: undefined,
        kernel: file('kernel') ?? image?.kernel,
        initrd: file('initrd') ?? image?.initrd,
      };
      for (const [kind, src] of Object.entries(sources)) {
        // A hard link where possible: these files are immutable and can be large.
        const dst = join(tmp, ARCHIVE_FILES[kind as keyof typeof ARCHIVE_FILES]);
        if (src) await link(src, dst).catch(() => copyFile(src, dst));
      }
      // The disk chain (snapshot layers, template layer, base image) as one standalone layer.
      await this.#d.driver.disks.exportStandalone(file('disk') ?? '', join(tmp, ARCHIVE_FILES.disk));
      const files: ArtifactRecord[] = [];
      for (const [kind, name] of Object.entries(ARCHIVE_FILES))
        files.push(await artifact(tmp, kind as ArtifactRecord['kind'], name));
      const manifest: ArchiveManifest = {
        format: ARCHIVE_FORMAT,
        snapshot: {
          id: snap.id,
          name: snap.name,
          memoryMiB: snap.memoryMiB,
          vcpus: snap.vcpus,
          guestToken: snap.guestToken,
          templateName: tpl.name,
          imageKey: tpl.imageKey,
          createdAt: snap.createdAt,
        },
        files,
      };
      await writeFileAtomic(join(tmp, MANIFEST), JSON.stringify(manifest, null, 2));
      await pipeline(packArchive(tmp), out);
      this.#d.log.info({ opId: ctx.opId, snapshotId: snap.id }, 'snapshot exported');
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }

  /**
   * Imports an archive written by exportSnapshot (from this or another host): verified entry by
   * entry (names, sizes, SHA-256) before anything is recorded. Keeps the snapshot's id and name;
   * an id or name already here is refused.
   */
  async importSnapshot(input: Readable, ctx: OpCtx = {}): Promise<SnapshotRecord> {
    const run = new OpRun(this.#d, 'import', 'archive', ctx.opId);
    try {
      const tmp = join(this.#d.dataDir, 'snapshots', `.staging-${run.op.id}`);
      await mkdir(tmp, { recursive: true });
      run.step('staging dir', { action: 'remove-path', path: tmp });
      const m = await unpackArchive(input, tmp);
      const id = validateName('snapshot id', m.snapshot.id);
      validateMemoryMiB(m.snapshot.memoryMiB);
      validateVcpus(m.snapshot.vcpus);
      if (m.snapshot.name !== null) this.#assertSnapshotNameFree(validateName('name', m.snapshot.name));
      try {
        this.#d.store.getSnapshot(id);
        throw new KilnError('already_exists', `snapshot ${id} already exists on this host`);
      } catch (e) {
        if (!(e instanceof KilnError && e.code === 'not_found')) throw e;
      }
      // The disk is untrusted input to the VMM: one standalone layer referring to no other file.
      await this.#d.driver.disks.verifyImported(join(tmp, ARCHIVE_FILES.disk));
      // Its agent holds this token until /init replaces it; without one it would obey anyone.
      const guestToken: unknown = m.snapshot.guestToken;
      if (typeof guestToken !== 'string' || !/^[\x21-\x7e]{16,256}$/.test(guestToken))
        throw invalidArgument(
          'archive',
          'the manifest has no usable guestToken (16-256 printable characters): its guest agent would take requests from anyone until /init; export it again from a current kiln',
        );
      const tplName = validateName('templateName', m.snapshot.templateName);
      let tpl = this.#d.store.listTemplates().find((t) => t.name === tplName);
      if (!tpl) {
        // The sandboxes it restores need a template record; the snapshot brings its own boot files.
        tpl = {
          id: newId('tpl'),
          name: tplName,
          imageKey: m.snapshot.imageKey,
          memoryMiB: m.snapshot.memoryMiB,
          vcpus: m.snapshot.vcpus,
          snapshotId: null,
          createdAt: new Date(this.#now()).toISOString(),
          ownerKeyId: null,
        };
        this.#d.store.putTemplate(tpl);
        run.step('template record', { action: 'delete-template', templateId: tpl.id });
      }
      await rm(join(tmp, MANIFEST));
      await rename(tmp, this.#snapDir(id));
      run.step('snapshot dir', { action: 'remove-path', path: this.#snapDir(id) });
      const snap: SnapshotRecord = {
        id,
        name: m.snapshot.name,
        kind: 'snapshot',
        sandboxId: null,
        templateId: tpl.id,
        memoryMiB: m.snapshot.memoryMiB,
        vcpus: m.snapshot.vcpus,
        parentId: null,
        artifacts: m.files,
        guestToken: m.snapshot.guestToken,
        pauseMs: null,
        createdAt: new Date(this.#now()).toISOString(),
        // Imported through the native API: admin keys only.
        ownerKeyId: null,
      };
      this.#d.store.insertSnapshot(snap);
      run.step('snapshot record', { action: 'delete-snapshot', snapshotId: id });
      run.done();
      this.#d.log.info({ opId: ctx.opId, snapshotId: id }, 'snapshot imported');
      return snap;
    } catch (e) {
      await run.fail(e);
      throw e;
    }
  }

  /** Removes pause and fork snapshots nothing depends on any more (their sandboxes ended or moved on). */
  async #collectInternalSnapshots(): Promise<string[]> {
    const removed: string[] = [];
    for (let again = true; again;) {
      again = false;
      for (const snap of this.#d.store.listSnapshots()) {
        if (snap.kind !== 'pause' && snap.kind !== 'fork') continue;
        const deps = this.#d.store.snapshotDependents(snap.id);
        if (deps.snapshots.length || deps.sandboxes.length) continue;
        await this.deleteSnapshot(snap.id).then(
          () => {
            removed.push(snap.id);
            again = true;
          },
          (e: unknown) => {
            this.#d.log.warn({ err: e, snapshotId: snap.id }, 'removing an unused snapshot failed');
          },
        );
      }
    }
    return removed;
  }

  /** How many disk layers sit between a snapshot's disk and its template's base. */
  #chain(snap: SnapshotRecord): SnapshotRecord[] {
    const out = [snap];
    for (let cur = snap; cur.parentId;) {
      cur = this.#d.store.getSnapshot(cur.parentId);
      out.push(cur);
    }
    return out;
  }

  /**
   * Flattens disk chains longer than MAX_DISK_CHAIN: the snapshot's disk is rewritten as one
   * layer over the chain's root (a template's layer) and re-parented there, so the layers in
   * between can go. VMs already running keep the files they opened.
   */
  async flattenChains(): Promise<string[]> {
    const done: string[] = [];
    for (const snap of this.#d.store.listSnapshots()) {
      // Leaves only: flattening one re-parents it and frees the layers below for collection.
      if (this.#d.store.snapshotDependents(snap.id).snapshots.length) continue;
      const chain = this.#chain(snap);
      if (chain.length <= MAX_DISK_CHAIN) continue;
      const root = chain[chain.length - 1];
      if (!root) continue;
      await this.#locks.run(`snapshot:${snap.id}`, async () => {
        const dir = this.#snapDir(snap.id);
        const disk = snap.artifacts.find((a) => a.kind === 'disk');
        const rootDisk = root.artifacts.find((a) => a.kind === 'disk');
        if (!disk || !rootDisk) return;
        const tmp = join(dir, `${disk.path}.flat`);
        await rm(tmp, { force: true });
        await this.#d.driver.disks.flatten(
          join(dir, disk.path),
          join(this.#snapDir(root.id), rootDisk.path),
          tmp,
        );
        const flat = await artifact(dir, 'disk', `${disk.path}.flat`);
        await rename(tmp, join(dir, disk.path));
        this.#d.store.updateSnapshot(snap.id, {
          parentId: root.id,
          artifacts: snap.artifacts.map((a) => (a.kind === 'disk' ? { ...flat, path: disk.path } : a)),
        });
        done.push(snap.id);
        this.#d.log.info({ snapshotId: snap.id, layers: chain.length }, 'disk chain flattened');
      });
    }
    if (done.length) await this.#collectInternalSnapshots();
    return done;
  }

  #admit(memoryMiB: number, source: SnapshotRecord): void {
    const cap = this.#d.capacity;
    const live = this.#d.store.listSandboxes({ states: [...LIVE] }, { limit: 1000 }).items;
    this.#d.disk?.admit(
      this.#diskLayer(source),
      live.flatMap((s) => {
        if (s.state === 'paused' || !s.sourceSnapshotId) return []; // no VM, nothing written
        try {
          return [{ id: s.id, layer: this.#diskLayer(s.sourceSnapshotId) }];
        } catch {
          return [];
        }
      }),
    );
    if (!cap) return;
    const used = live.reduce((n, s) => n + s.memoryMiB, 0);
    const limit = Math.floor(cap.hostMemoryMiB * cap.overcommitRatio);
    if (used + memoryMiB > limit) {
      throw new KilnError(
        'capacity',
        `not enough host memory: ${used} MiB committed to ${live.length} sandboxes + ${memoryMiB} MiB would pass the limit of ${limit} MiB (${cap.hostMemoryMiB} MiB x ${cap.overcommitRatio}); kill a sandbox or raise the overcommit ratio`,
      );
    }
  }

  /** The disk layer a sandbox restored from `snap` (a record or its id) has its overlay on. */
  #diskLayer(snap: SnapshotRecord | string): string {
    const rec = typeof snap === 'string' ? this.#d.store.getSnapshot(snap) : snap;
    return join(this.#snapDir(rec.id), rec.artifacts.find((a) => a.kind === 'disk')?.path ?? DISK_LAYER);
  }

  /** The size of a sandbox's disk as its guest sees it (MiB; the most its overlay can hold), if known. */
  diskSizeMiB(s: SandboxRecord): number | undefined {
    if (!this.#d.disk || !s.sourceSnapshotId) return undefined;
    try {
      return Math.round(this.#d.disk.diskBytes(this.#diskLayer(s.sourceSnapshotId)) / 2 ** 20);
    } catch {
      return undefined;
    }
  }

  templates(): TemplateRecord[] {
    return this.#d.store.listTemplates();
  }

  /**
   * True when sandboxes can be made from the template: it has a snapshot whose agent holds a
   * bootstrap token (one built by an older kiln has none and must be rebuilt).
   */
  templateReady(t: TemplateRecord): boolean {
    if (!t.snapshotId) return false;
    try {
      return this.#d.store.getSnapshot(t.snapshotId).guestToken !== null;
    } catch (e) {
      if (e instanceof KilnError && e.code === 'not_found') return false;
      throw e;
    }
  }

  logs(id: string, page?: PageOpts): Page<EventRecord> {
    this.get(id);
    return this.#d.store.listEvents(id, page);
  }

  get(id: string): SandboxRecord {
    validateName('sandboxId', id);
    return this.#live(this.#d.store.getSandbox(id));
  }

  list(filter: SandboxFilter = {}, page?: PageOpts): Page<SandboxRecord> {
    const p = this.#d.store.listSandboxes(filter, page);
    return { ...p, items: p.items.map((s) => this.#live(s)) };
  }

  /** A running sandbox's condition as the liveness watcher sees it now (the store may lag). */
  #live(s: SandboxRecord): SandboxRecord {
    if (s.state !== 'running') return s;
    const condition = this.#liveness.conditionOf(s);
    return condition === s.condition ? s : { ...s, condition };
  }

  async exec(id: string, cmd: string, opts: ExecOpts = {}, ctx: OpCtx = {}): Promise<ExecResult> {
    const s = this.get(id);
    if (s.state !== 'running')
      throw new KilnError('invalid_state', `sandbox ${id} is ${s.state}; exec needs running`);
    // The cached agent address: a hung QEMU does not answer the driver either.
    const { baseUrl } = await this.agent(id);
    const guest = this.#d.guest({
      baseUrl,
      accessToken: s.accessToken,
      ...(ctx.opId ? { opId: ctx.opId } : {}),
    });
    return guest.exec(cmd, opts);
  }

  /**
   * Where a running sandbox's guest agent answers (`http://<host>:<forwarded port>`), for the
   * envd proxy. The port is cached per VM; `forgetAgent` drops it when a connection fails.
   * `not_found` for an unknown sandbox, `invalid_state` for one that is not running.
   */
  async agent(id: string): Promise<{ sandbox: SandboxRecord; baseUrl: string }> {
    const s = this.get(id);
    if (s.state !== 'running') {
      this.#agentPorts.delete(id);
      throw new KilnError('invalid_state', `sandbox ${id} is ${s.state}`, {
        details: { sandboxId: id, state: s.state },
      });
    }
    let c = this.#agentPorts.get(id);
    if (!c || c.startedAt !== s.startedAt) {
      const info = await this.#d.driver.status(id);
      if (info.state === 'stopped' || !info.agent.port)
        throw new KilnError('invalid_state', `sandbox ${id} has no running VM`, {
          details: { sandboxId: id, state: 'dead' },
        });
      c = { host: info.agent.host, port: info.agent.port, startedAt: s.startedAt };
      this.#agentPorts.set(id, c);
    }
    const baseUrl = `http://${c.host}:${c.port}`;
    // A sandbox marked unresponsive or stopped fails now, with why, instead of hanging the caller.
    await this.#liveness.assertUsable(s, baseUrl);
    return { sandbox: s, baseUrl };
  }

  /** Drops the cached agent address of a sandbox (its VM may have changed). */
  forgetAgent(id: string): void {
    this.#agentPorts.delete(id);
  }

  /** The guest's own CPU, memory and disk figures (envd's /metrics) of a running sandbox. */
  async guestMetrics(id: string, ctx: OpCtx = {}): Promise<GuestMetrics> {
    const { sandbox, baseUrl } = await this.agent(id);
    return this.#d
      .guest({ baseUrl, accessToken: sandbox.accessToken, ...(ctx.opId ? { opId: ctx.opId } : {}) })
      .metrics();
  }

  /** Ends a sandbox. A second kill while one runs is `conflict`; a dead one is `invalid_state`. */
  async kill(id: string, ctx: OpCtx = {}, reason = 'killed'): Promise<SandboxRecord> {
    this.get(id);
    // A kill waits for a snapshot, pause or resume in progress; a second kill is refused.
    if (this.#killing.has(id))
      throw new KilnError('conflict', `kill ${id}: another kill of ${id} is in progress; retry later`);
    this.#killing.add(id);
    try {
      return await this.#killLocked(id, ctx, reason);
    } finally {
      this.#killing.delete(id);
    }
  }

  #killLocked(id: string, ctx: OpCtx, reason: string): Promise<SandboxRecord> {
    return this.#locks.run(id, async () => {
      const s = this.#d.store.getSandbox(id);
      if (s.state === 'dead')
        throw new KilnError('invalid_state', `sandbox ${id} is already dead (${s.endReason ?? 'ended'})`);
      const run = new OpRun(this.#d, 'kill', id, ctx.opId);
      try {
        this.#d.store.updateSandbox(id, { state: 'killing' });
        this.#agentPorts.delete(id);
        await runUndo({ action: 'kill-vm', vmId: id }, this.#d);
        const rec = this.#d.store.updateSandbox(id, { state: 'dead', endReason: reason });
        run.done();
        this.#d.store.appendEvent(id, 'info', `sandbox ended: ${reason}`, { opId: ctx.opId ?? null });
        await this.#collectInternalSnapshots();
        return rec;
      } catch (e) {
        await run.fail(e);
        throw e;
      }
    });
  }

  /**
   * CPU (% of one core since the previous call, or since start on the first), memory (RSS and
   * PSS of its QEMU process) and disk (bytes its overlay holds) of a live sandbox.
   */
  async stats(id: string): Promise<SandboxStats> {
    const latest = this.#latestStats.get(id);
    // The background sampler keeps a recent sample; a fresh one is taken when it has none.
    if (
      latest &&
      this.#now() - Date.parse(latest.at) < STATS_EVERY_MS * 2 &&
      this.get(id).state === 'running'
    )
      return latest;
    return this.#sampleStats(id);
  }

  async #sampleStats(id: string): Promise<SandboxStats> {
    const s = this.get(id);
    if (s.state !== 'running')
      throw new KilnError('invalid_state', `sandbox ${id} is ${s.state}; stats need a running VM`);
    const info = await this.#d.driver.status(id);
    const u = procUsage(info.pid);
    if (!u || info.state === 'stopped')
      throw new KilnError('invalid_state', `sandbox ${id} has no running VM`);
    const t = this.#now();
    const prev = this.#samples.get(id) ?? { ticks: 0, at: Date.parse(info.startedAt) };
    this.#samples.set(id, { ticks: u.cpuTicks, at: t });
    const cpuPct = t > prev.at ? ((u.cpuTicks - prev.ticks) / 100 / ((t - prev.at) / 1000)) * 100 : 0;
    const disk = await stat(info.overlay).catch(() => undefined);
    const sample: SandboxStats = {
      sandboxId: id,
      cpuPct: Math.round(cpuPct * 100) / 100,
      rssBytes: u.rssBytes,
      pssBytes: u.pssBytes,
      diskBytes: disk ? disk.blocks * 512 : 0,
      memoryMiB: s.memoryMiB,
      at: new Date(t).toISOString(),
    };
    this.#latestStats.set(id, sample);
    return sample;
  }

  /** Samples every running sandbox (the background does this every STATS_EVERY_MS). */
  async sampleAll(): Promise<void> {
    const live = this.#d.store.listSandboxes({ states: ['running'] }, { limit: 1000 }).items;
    const ids = new Set(live.map((s) => s.id));
    for (const id of this.#latestStats.keys()) if (!ids.has(id)) this.#latestStats.delete(id);
    for (const id of ids) await this.#sampleStats(id).catch(() => undefined);
  }

  /** Sets the sandbox to end `timeoutS` seconds from now (E2B's setTimeout). */
  setTimeout(id: string, timeoutS: number): SandboxRecord {
    validateInt('timeout', timeoutS, 1, MAX_TIMEOUT_S);
    const s = this.get(id);
    if (s.state === 'dead') throw new KilnError('invalid_state', `sandbox ${id} is dead`);
    return this.#d.store.updateSandbox(id, { endAt: new Date(this.#now() + timeoutS * 1000).toISOString() });
  }

  /**
   * Ends every running sandbox whose end time has passed: pauses it when it asked for that
   * (autoPause), kills it otherwise. Paused sandboxes stay until resumed or killed (as in E2B).
   */
  async reapExpired(): Promise<string[]> {
    const now = this.#now();
    const expired = this.#d.store
      .listSandboxes({ states: ['running'] }, { limit: 1000 })
      .items.filter((s) => Date.parse(s.endAt) <= now);
    const done: string[] = [];
    for (const s of expired) {
      await (s.autoPause ? this.pause(s.id) : this.kill(s.id, {}, 'timeout')).then(
        () => done.push(s.id),
        (e: unknown) => {
          this.#d.log.warn({ err: e, sandboxId: s.id }, 'reaping failed');
        },
      );
    }
    return done;
  }

  /**
   * Marks running sandboxes whose VM died (killed from outside, crashed) dead, with the reason
   * its console gives, and cleans them; sets or clears conditions (unresponsive agent, VM stopped
   * on a full disk). See LivenessWatcher. Resolves with the ids found dead.
   */
  async checkLiveness(): Promise<string[]> {
    return this.#liveness.check();
  }

  /**
   * Start-up reconciliation after a crash: unwinds interrupted operations (or finishes a create
   * that got as far as a running sandbox), re-adopts sandboxes whose VM still runs, marks the
   * others dead, and kills VMs and removes staging files that no record explains.
   */
  async reconcile(): Promise<ReconcileReport> {
    const out: ReconcileReport = {
      adopted: [],
      dead: [],
      orphans: [],
      unwound: [],
      finished: [],
      orphanSnapshotDirs: [],
      stuck: [],
      unchecked: [],
    };
    // False only when the driver saw the VM gone; a host error propagates (nothing is undone on it).
    const alive = async (id: string): Promise<boolean> =>
      this.#d.driver.status(id).then(
        (i) => i.state !== 'stopped',
        (e: unknown) => {
          if (e instanceof KilnError && e.code === 'not_found') return false;
          throw e;
        },
      );
    for (const op of this.#d.store.openOperations()) {
      if (op.kind === 'create') {
        const s = this.#d.store.getSandbox(op.subject);
        if (s.state === 'running' && (await alive(s.id))) {
          this.#d.store.finishOperation(op.id, 'done');
          continue;
        }
      }
      if (op.kind === 'resume') {
        const s = this.#d.store.getSandbox(op.subject);
        if (s.state === 'running' && (await alive(s.id))) {
          this.#d.store.finishOperation(op.id, 'done');
          continue;
        }
      }
      if (pastPointOfNoReturn(op)) {
        // Finish the snapshot rather than undo it; if that fails, keep its files and the open
        // op for the next start-up (undoing would delete a layer the source's disk sits on).
        if (await this.#rollForwardSnapshot(op)) {
          this.#d.store.finishOperation(op.id, 'done');
          out.finished.push(op.id);
        } else {
          out.stuck.push(op.id);
        }
        continue;
      }
      for (const step of [...op.steps].reverse()) {
        await runUndo(step.undo, this.#d).catch((e: unknown) => {
          this.#d.log.warn({ err: e, opId: op.id }, 'undo at start-up failed');
        });
      }
      // An unwound pause or resume leaves the sandbox as it was before.
      if (op.kind === 'pause' && this.#d.store.getSandbox(op.subject).state === 'pausing')
        this.#d.store.updateSandbox(op.subject, { state: 'running' });
      if (op.kind === 'resume' && this.#d.store.getSandbox(op.subject).state === 'resuming')
        this.#d.store.updateSandbox(op.subject, { state: 'paused' });
      // A kill that was interrupted still means: this sandbox ends.
      if (op.kind === 'kill') {
        await runUndo({ action: 'kill-vm', vmId: op.subject }, this.#d);
        const s = this.#d.store.getSandbox(op.subject);
        if (s.state !== 'dead')
          this.#d.store.updateSandbox(op.subject, { state: 'dead', endReason: 'killed' });
      }
      this.#d.store.finishOperation(op.id, 'undone', 'interrupted by a daemon restart');
      out.unwound.push(op.id);
    }
    const known = new Set<string>();
    for (const s of this.#d.store.listSandboxes({ states: [...LIVE] }, { limit: 1000 }).items) {
      known.add(s.id);
      const vm = await this.#vmAtStartUp(s.id);
      if (vm.state === 'unknown') {
        this.#d.log.warn({ err: vm.error, sandboxId: s.id }, 'cannot check the VM at start-up; left as is');
        out.unchecked.push(s.id);
        continue;
      }
      if (s.state === 'running' && vm.state === 'up') {
        out.adopted.push(s.id);
        continue;
      }
      // A paused sandbox has no VM: it lives in its pause snapshot.
      if (s.state === 'paused' && s.sourceSnapshotId) {
        // Whatever VM (or leftover directory of one) carries its id is stale.
        await runUndo({ action: 'kill-vm', vmId: s.id }, this.#d);
        out.adopted.push(s.id);
        continue;
      }
      await runUndo({ action: 'kill-vm', vmId: s.id }, this.#d);
      this.#d.store.updateSandbox(s.id, {
        state: 'dead',
        endReason:
          s.state === 'killing' ? 'killed' : vm.state === 'gone' ? vm.reason : 'lost in a daemon restart',
      });
      out.dead.push(s.id);
    }
    // A host error listing VMs skips the sweep (nothing is killed on a guess); the next start redoes it.
    const vms = await this.#d.driver.list().catch((e: unknown) => {
      this.#d.log.warn({ err: e }, 'cannot list VMs at start-up; orphan VMs are left for the next start');
      return [] as string[];
    });
    for (const vm of vms) {
      if (known.has(vm)) continue;
      await runUndo({ action: 'kill-vm', vmId: vm }, this.#d);
      out.orphans.push(vm);
    }
    const recorded = new Set(this.#d.store.listSnapshots().map((x) => x.id));
    // The directories of snapshots still to be finished are not orphans.
    for (const op of this.#d.store.openOperations()) {
      const dirStep = op.steps.find((st) => st.name === 'snapshot dir');
      if (dirStep?.undo.action === 'remove-path') recorded.add(basename(dirStep.undo.path));
    }
    for (const f of await readdir(join(this.#d.dataDir, 'snapshots')).catch(() => [] as string[])) {
      // Staging dirs of interrupted template builds and snapshot dirs no record explains.
      if (f.startsWith('.staging-') || !recorded.has(f)) {
        await rm(join(this.#d.dataDir, 'snapshots', f), { recursive: true, force: true });
        out.orphanSnapshotDirs.push(f);
      }
    }
    await this.#collectInternalSnapshots();
    return out;
  }

  /**
   * What start-up finds of a sandbox's VM: `up` (re-adoptable), or gone with the reason to record
   * (the console's last words when it exited; a QEMU whose directory vanished is killed, as it
   * cannot be re-adopted without its QMP socket), or `unknown` on a host error.
   */
  async #vmAtStartUp(
    id: string,
  ): Promise<{ state: 'up' } | { state: 'gone'; reason: string } | { state: 'unknown'; error: unknown }> {
    try {
      const info = await this.#d.driver.status(id);
      if (info.state !== 'stopped') return { state: 'up' };
      const lines = await this.#d.driver.consoleTail(id, CONSOLE_LINES).catch(() => [] as string[]);
      if (lines.length)
        this.#d.store.appendEvent(id, 'warn', exitReason(lines), { console: consoleExcerpt(lines) });
      return { state: 'gone', reason: `lost in a daemon restart (${exitReason(lines)})` };
    } catch (e) {
      if (!(e instanceof KilnError && e.code === 'not_found')) return { state: 'unknown', error: e };
      const pids = e.details?.['pids'];
      return {
        state: 'gone',
        reason: Array.isArray(pids)
          ? `lost in a daemon restart: its VM directory was gone and its QEMU (pid ${pids.join(', ')}) could not be re-adopted without its QMP socket, so it was killed`
          : 'lost in a daemon restart',
      };
    }
  }

  /**
   * Finishes a snapshot (or pause) a crash interrupted after its point of no return: the source
   * runs again (or, for a pause, stays stopped) and the snapshot is completed from its directory.
   * False when there is nothing to finish from (then the op is unwound).
   */
  async #rollForwardSnapshot(op: OperationRecord): Promise<boolean> {
    const dirStep = op.steps.find((st) => st.name === 'snapshot dir');
    if (dirStep?.undo.action !== 'remove-path') return false;
    let meta: SnapshotMeta;
    try {
      meta = JSON.parse(await readFile(join(dirStep.undo.path, META_FILE), 'utf8')) as SnapshotMeta;
    } catch {
      return false;
    }
    const layer = join(dirStep.undo.path, DISK_LAYER);
    try {
      const vm = await this.#d.driver.status(op.subject).then(
        (i) => i.state,
        () => 'gone' as const,
      );
      if (meta.kind === 'pause') {
        // Stopping keeps the overlay as the layer; it picks up a stop that was cut short.
        if (!existsSync(layer) && vm !== 'gone')
          await this.#d.driver.stop(op.subject, { keepOverlayAs: layer });
        // The layer is kept only once QEMU has exited, but a crash before the stop removed the
        // VM's directory leaves it behind, and a resume would find the VM "already exists".
        if (existsSync(layer)) await runUndo({ action: 'kill-vm', vmId: op.subject }, this.#d);
      } else if (vm === 'paused') {
        // The freeze may have been cut short: freezeDisk finishes it (or sees it done).
        await this.#d.driver.freezeDisk(op.subject, layer);
        await this.#d.driver.resume(op.subject);
      }
      if (!existsSync(layer)) return false;
      const snap = await this.#completeSnapshot(meta);
      const s = this.#d.store.getSandbox(op.subject);
      if (s.state !== 'dead') {
        this.#d.store.updateSandbox(op.subject, {
          sourceSnapshotId: snap.id,
          ...(meta.kind === 'pause' && s.state === 'pausing' ? { state: 'paused' as const } : {}),
        });
      }
      this.#d.log.info({ opId: op.id, snapshotId: snap.id }, 'interrupted snapshot finished at start-up');
      return true;
    } catch (e) {
      this.#d.log.warn({ err: e, opId: op.id }, 'finishing an interrupted snapshot failed');
      return false;
    }
  }

  /** Starts the reaper and the liveness watcher. */
  startBackground(
    opts: { reapEveryMs?: number; livenessEveryMs?: number; flattenEveryMs?: number } = {},
  ): void {
    const loop = (ms: number, fn: () => Promise<unknown>): NodeJS.Timeout => {
      let busy = false;
      const t = setInterval(() => {
        if (busy) return;
        busy = true;
        fn()
          .catch((e: unknown) => {
            this.#d.log.warn({ err: e }, 'background task failed');
          })
          .finally(() => {
            busy = false;
          });
      }, ms);
      t.unref();
      return t;
    };
    this.#timers.push(loop(opts.reapEveryMs ?? 1000, () => this.reapExpired()));
    // No busy guard: the watcher skips sandboxes still being checked, so one hung VM never
    // delays the others.
    const liveness = setInterval(() => {
      this.checkLiveness().catch((e: unknown) => {
        this.#d.log.warn({ err: e }, 'liveness check failed');
      });
    }, opts.livenessEveryMs ?? 1000);
    liveness.unref();
    this.#timers.push(liveness);
    this.#timers.push(loop(STATS_EVERY_MS, () => this.sampleAll()));
    this.#timers.push(loop(opts.flattenEveryMs ?? 30_000, () => this.flattenChains()));
  }

  stopBackground(): void {
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
  }
}
