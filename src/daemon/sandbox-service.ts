import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type {
  ArtifactRecord,
  EventRecord,
  SandboxRecord,
  SnapshotRecord,
  TemplateRecord,
} from '../core/domain.ts';
import { KilnError, invalidArgument } from '../core/errors.ts';
import { newId } from '../core/ids.ts';
import { procUsage } from '../core/proc.ts';
import { validateInt, validateMemoryMiB, validateName, validateVcpus } from '../core/validate.ts';
import type { Page, PageOpts, SandboxFilter, Store } from '../store/store.ts';
import type { VmmDriver, VmSpec } from '../vmm/driver.ts';
import { waitForHttp } from '../vmm/health.ts';
import { AGENT_PORT } from '../vmm/qemu/args.ts';
import type { ExecOpts, ExecResult, GuestClient, GuestMetrics, HttpGuestClientOpts } from './guest-client.ts';
import { OpRun, runUndo } from './journal.ts';
import { KeyedLock } from './locks.ts';

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
  /** How long a restored guest may take to answer (default 60 s). */
  readyTimeoutMs?: number;
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

export const DEFAULT_TIMEOUT_S = 300;
/** How often the background samples every sandbox's CPU, memory and disk. */
export const STATS_EVERY_MS = 5000;
export const MAX_TIMEOUT_S = 24 * 3600;
const LIVE = ['creating', 'running', 'pausing', 'paused', 'resuming', 'killing'] as const;

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest('hex');
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
  readonly #agentPorts = new Map<string, { port: number; startedAt: string | null }>();
  #timers: NodeJS.Timeout[] = [];

  constructor(deps: SandboxServiceDeps) {
    this.#d = deps;
    this.#now = deps.now ?? Date.now;
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
      const info = await this.#d.driver.start({
        id: vmId,
        kernel: image.kernel,
        initrd: image.initrd,
        rootfs: image.rootfs,
        memoryMiB: res.memoryMiB,
        vcpus: res.vcpus,
        memoryFile: { path: join(staging, 'memory'), share: true },
      });
      await waitForHttp(`http://127.0.0.1:${info.ports[AGENT_PORT] ?? 0}/health`, {
        timeoutMs: 180_000,
        alive: async () => (await this.#d.driver.status(vmId)).state !== 'stopped',
      });
      const saved = await this.#d.driver.saveState(vmId, join(staging, 'state'));
      await this.#d.driver.stop(vmId, { keepOverlayAs: join(staging, 'disk.qcow2') });
      const artifacts: ArtifactRecord[] = [];
      for (const [kind, path] of [
        ['memory', 'memory'],
        ['state', 'state'],
        ['disk', 'disk.qcow2'],
      ] as const) {
        const p = join(staging, path);
        artifacts.push({ kind, path, size: (await stat(p)).size, sha256: await sha256File(p) });
      }
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
        guestToken: null,
        pauseMs: null,
        createdAt: tpl.createdAt,
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

  async create(req: CreateRequest, ctx: OpCtx = {}): Promise<SandboxRecord> {
    const tpl = this.#d.store.getTemplate(validateName('template', req.template));
    if (!tpl.snapshotId)
      throw new KilnError('invalid_state', `template "${tpl.name}" has no snapshot yet; build it first`);
    const snap = this.#d.store.getSnapshot(tpl.snapshotId);
    // RAM and CPUs come back from the template's snapshot: they cannot differ from it.
    if (req.memoryMiB !== undefined && validateMemoryMiB(req.memoryMiB) !== tpl.memoryMiB) {
      throw invalidArgument(
        'memoryMiB',
        `must be the template's ${tpl.memoryMiB} MiB (sandboxes restore its memory snapshot)`,
      );
    }
    if (req.vcpus !== undefined && validateVcpus(req.vcpus) !== tpl.vcpus) {
      throw invalidArgument('vcpus', `must be the template's ${tpl.vcpus} (sandboxes restore its snapshot)`);
    }
    const timeoutS =
      req.timeoutS === undefined ? DEFAULT_TIMEOUT_S : validateInt('timeout', req.timeoutS, 1, MAX_TIMEOUT_S);
    const metadata = stringMap('metadata', req.metadata);
    const envVars = stringMap('envVars', req.envVars);
    this.#admit(tpl.memoryMiB);
    const image = await this.#d.image(tpl.imageKey);
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
          memoryMiB: tpl.memoryMiB,
          vcpus: tpl.vcpus,
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
        });
        run.step('sandbox record', { action: 'delete-sandbox', sandboxId: id });
        run.step('vm', { action: 'kill-vm', vmId: id });
        const t0 = performance.now();
        const info = await this.#d.driver.start(
          this.#restoreSpec(id, image, snap, req.allowInternet ?? true),
        );
        const tRestored = performance.now();
        const guest = this.#d.guest({
          baseUrl: `http://127.0.0.1:${info.ports[AGENT_PORT] ?? 0}`,
          accessToken: token,
          ...(ctx.opId ? { opId: ctx.opId } : {}),
        });
        await waitForHttp(`http://127.0.0.1:${info.ports[AGENT_PORT] ?? 0}/health`, {
          timeoutMs: this.#d.readyTimeoutMs ?? 60_000,
          intervalMs: 10,
          alive: async () => (await this.#d.driver.status(id)).state !== 'stopped',
        });
        const tReady = performance.now();
        await guest.init({
          accessToken: token,
          envVars,
          defaultUser: 'user',
          timestamp: new Date(this.#now()).toISOString(),
        });
        const tInit = performance.now();
        const rec = this.#d.store.updateSandbox(
          id,
          { state: 'running', startedAt: new Date(this.#now()).toISOString() },
          ['creating'],
        );
        run.done();
        this.#d.store.appendEvent(id, 'info', 'sandbox created', {
          template: tpl.name,
          opId: ctx.opId ?? null,
        });
        const ms = (a: number, b: number): number => Math.round(b - a);
        log.info(
          {
            template: tpl.name,
            restoreMs: ms(t0, tRestored),
            readyMs: ms(tRestored, tReady),
            initMs: ms(tReady, tInit),
          },
          'sandbox created',
        );
        return rec;
      } catch (e) {
        log.warn({ err: e }, 'create failed; unwinding');
        await run.fail(e);
        throw e;
      }
    });
  }

  #restoreSpec(id: string, image: BootImage, snap: SnapshotRecord, allowInternet: boolean): VmSpec {
    const dir = this.#snapDir(snap.id);
    const file = (kind: ArtifactRecord['kind']): string => {
      const a = snap.artifacts.find((x) => x.kind === kind);
      if (!a) throw new KilnError('internal', `snapshot ${snap.id} has no ${kind} artifact`);
      return join(dir, a.path);
    };
    return {
      id,
      kernel: image.kernel,
      initrd: image.initrd,
      rootfs: image.rootfs,
      memoryMiB: snap.memoryMiB,
      vcpus: snap.vcpus,
      memoryFile: { path: file('memory'), share: false },
      disk: { backing: file('disk'), format: 'qcow2' },
      incoming: { stateFile: file('state') },
      restrictNetwork: !allowInternet,
    };
  }

  #admit(memoryMiB: number): void {
    const cap = this.#d.capacity;
    if (!cap) return;
    const live = this.#d.store.listSandboxes({ states: [...LIVE] }, { limit: 1000 }).items;
    const used = live.reduce((n, s) => n + s.memoryMiB, 0);
    const limit = Math.floor(cap.hostMemoryMiB * cap.overcommitRatio);
    if (used + memoryMiB > limit) {
      throw new KilnError(
        'capacity',
        `not enough host memory: ${used} MiB committed to ${live.length} sandboxes + ${memoryMiB} MiB would pass the limit of ${limit} MiB (${cap.hostMemoryMiB} MiB x ${cap.overcommitRatio}); kill a sandbox or raise the overcommit ratio`,
      );
    }
  }

  templates(): TemplateRecord[] {
    return this.#d.store.listTemplates();
  }

  logs(id: string, page?: PageOpts): Page<EventRecord> {
    this.get(id);
    return this.#d.store.listEvents(id, page);
  }

  get(id: string): SandboxRecord {
    validateName('sandboxId', id);
    return this.#d.store.getSandbox(id);
  }

  list(filter: SandboxFilter = {}, page?: PageOpts): Page<SandboxRecord> {
    return this.#d.store.listSandboxes(filter, page);
  }

  async exec(id: string, cmd: string, opts: ExecOpts = {}, ctx: OpCtx = {}): Promise<ExecResult> {
    const s = this.get(id);
    if (s.state !== 'running')
      throw new KilnError('invalid_state', `sandbox ${id} is ${s.state}; exec needs running`);
    const info = await this.#d.driver.status(id);
    const guest = this.#d.guest({
      baseUrl: `http://127.0.0.1:${info.ports[AGENT_PORT] ?? 0}`,
      accessToken: s.accessToken,
      ...(ctx.opId ? { opId: ctx.opId } : {}),
    });
    return guest.exec(cmd, opts);
  }

  /**
   * Where a running sandbox's guest agent answers (`http://127.0.0.1:<forwarded port>`), for the
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
      const port = info.ports[AGENT_PORT];
      if (info.state === 'stopped' || !port)
        throw new KilnError('invalid_state', `sandbox ${id} has no running VM`, {
          details: { sandboxId: id, state: 'dead' },
        });
      c = { port, startedAt: s.startedAt };
      this.#agentPorts.set(id, c);
    }
    return { sandbox: s, baseUrl: `http://127.0.0.1:${c.port}` };
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
    return this.#locks.tryRun(id, `kill ${id}`, async () => {
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
    if (latest && this.#now() - Date.parse(latest.at) < STATS_EVERY_MS * 2 && this.get(id).state !== 'dead')
      return latest;
    return this.#sampleStats(id);
  }

  async #sampleStats(id: string): Promise<SandboxStats> {
    const s = this.get(id);
    if (s.state === 'dead') throw new KilnError('invalid_state', `sandbox ${id} is dead`);
    const info = await this.#d.driver.status(id);
    const u = procUsage(info.pid);
    if (!u || info.state === 'stopped')
      throw new KilnError('invalid_state', `sandbox ${id} has no running VM`);
    const t = this.#now();
    const prev = this.#samples.get(id) ?? { ticks: 0, at: Date.parse(info.startedAt) };
    this.#samples.set(id, { ticks: u.cpuTicks, at: t });
    const cpuPct = t > prev.at ? ((u.cpuTicks - prev.ticks) / 100 / ((t - prev.at) / 1000)) * 100 : 0;
    const disk = await stat(join(info.dir, 'overlay.qcow2')).catch(() => undefined);
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
    const live = this.#d.store.listSandboxes({ states: ['running', 'paused'] }, { limit: 1000 }).items;
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

  /** Kills every live sandbox whose end time has passed. */
  async reapExpired(): Promise<string[]> {
    const now = this.#now();
    const expired = this.#d.store
      .listSandboxes({ states: ['running', 'paused'] }, { limit: 1000 })
      .items.filter((s) => Date.parse(s.endAt) <= now);
    const done: string[] = [];
    for (const s of expired) {
      await this.kill(s.id, {}, 'timeout').then(
        () => done.push(s.id),
        (e: unknown) => {
          this.#d.log.warn({ err: e, sandboxId: s.id }, 'reaping failed');
        },
      );
    }
    return done;
  }

  /** Marks running sandboxes whose VM died (killed from outside, crashed) dead, and cleans them. */
  async checkLiveness(): Promise<string[]> {
    const dead: string[] = [];
    for (const s of this.#d.store.listSandboxes({ states: ['running', 'paused'] }, { limit: 1000 }).items) {
      if (this.#locks.isHeld(s.id)) continue;
      const st = await this.#d.driver.status(s.id).then(
        (i) => i.state,
        () => 'stopped' as const,
      );
      if (st !== 'stopped') continue;
      await this.kill(s.id, {}, 'vm exited').then(
        () => dead.push(s.id),
        () => undefined,
      );
    }
    return dead;
  }

  /**
   * Start-up reconciliation after a crash: unwinds interrupted operations (or finishes a create
   * that got as far as a running sandbox), re-adopts sandboxes whose VM still runs, marks the
   * others dead, and kills VMs and removes staging files that no record explains.
   */
  async reconcile(): Promise<{ adopted: string[]; dead: string[]; orphans: string[]; unwound: string[] }> {
    const out = {
      adopted: [] as string[],
      dead: [] as string[],
      orphans: [] as string[],
      unwound: [] as string[],
    };
    const alive = async (id: string): Promise<boolean> =>
      this.#d.driver.status(id).then(
        (i) => i.state !== 'stopped',
        () => false,
      );
    for (const op of this.#d.store.openOperations()) {
      if (op.kind === 'create') {
        const s = this.#d.store.getSandbox(op.subject);
        if (s.state === 'running' && (await alive(s.id))) {
          this.#d.store.finishOperation(op.id, 'done');
          continue;
        }
      }
      for (const step of [...op.steps].reverse()) {
        await runUndo(step.undo, this.#d).catch((e: unknown) => {
          this.#d.log.warn({ err: e, opId: op.id }, 'undo at start-up failed');
        });
      }
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
      if ((s.state === 'running' || s.state === 'paused') && (await alive(s.id))) {
        out.adopted.push(s.id);
        continue;
      }
      await runUndo({ action: 'kill-vm', vmId: s.id }, this.#d);
      this.#d.store.updateSandbox(s.id, {
        state: 'dead',
        endReason: s.state === 'killing' ? 'killed' : 'lost in a daemon restart',
      });
      out.dead.push(s.id);
    }
    for (const vm of await this.#d.driver.list()) {
      if (known.has(vm)) continue;
      await runUndo({ action: 'kill-vm', vmId: vm }, this.#d);
      out.orphans.push(vm);
    }
    for (const f of await readdir(join(this.#d.dataDir, 'snapshots')).catch(() => [] as string[])) {
      if (f.startsWith('.staging-'))
        await rm(join(this.#d.dataDir, 'snapshots', f), { recursive: true, force: true });
    }
    return out;
  }

  /** Starts the reaper and the liveness watcher. */
  startBackground(opts: { reapEveryMs?: number; livenessEveryMs?: number } = {}): void {
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
    this.#timers.push(loop(opts.livenessEveryMs ?? 1000, () => this.checkLiveness()));
    this.#timers.push(loop(STATS_EVERY_MS, () => this.sampleAll()));
  }

  stopBackground(): void {
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
  }
}
