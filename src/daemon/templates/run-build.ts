/**
 * One template build, start to end: a builder sandbox of kiln's own restored from the deepest
 * cached layer (or the parent template), the steps from the first one the cache does not hold
 * (each VM-changing step snapshotted as a layer `kiln-layer-<key>`), then the start command, the
 * ready check, and a snapshot of the RUNNING VM that becomes the template.
 *
 * Crash safety: the build is one operation of the journal (kind `build`, subject the build id):
 * its steps are `build` (undo: the build fails, "interrupted by a daemon restart"), `builder`
 * (undo: the builder sandbox ends) and `published`. The template and the build's `ready` are
 * written in one transaction, so start-up replay (recovery/replay.ts) finds a build either
 * published (the undo leaves it ready and kills the builder) or not (it fails, nothing of it is
 * a template). Every snapshot inside is kiln's own journalled snapshot operation (a layer is
 * whole or absent; one left by a failed build is cache). What a build finds and makes is leased
 * (leases.ts) until it ends, so template garbage collection keeps it.
 */
import { BUILDER_METADATA_KEY } from '../../core/defaults.ts';
import type { Logger } from 'pino';
import type { SnapshotRecord, TemplateBuildRecord, TemplateRecord } from '../../core/domain.ts';
import { KilnError, asKilnError } from '../../core/errors.ts';
import type { RegistryLogin } from '../../core/registry-login.ts';
import {
  E2B_DEFAULT_IMAGE,
  RESOURCES_TEMPLATE_PREFIX,
  changesVm,
  describeStep,
  isHiddenTemplateName,
  layerName,
  type BuildSpec,
  type BuildStep,
} from '../../core/template-steps.ts';
import type { Store } from '../../store/store.ts';
import type { OpRun } from '../journal.ts';
import { findLayer, planCache, type CachePlan } from './cache-plan.ts';
import type { SandboxService } from '../sandbox-service.ts';
import type { BootImage } from '../sandbox/types.ts';
import type { BuildWatch } from './build-follow.ts';
import { BuildLog } from './build-log.ts';
import type { BuildFiles } from './files.ts';
import { GuestSteps, StepFailed, applyContext, initialContext } from './guest-steps.ts';
import type { BuildLease, BuildLeases } from './leases.ts';

export interface BuildRunDeps {
  svc: SandboxService;
  store: Store;
  files: BuildFiles;
  log: Logger;
  now: () => number;
  /** Builds kiln's default template on first use (TemplateEnsurer). */
  ensureTemplate: (name: string, opId: string) => Promise<void>;
  /**
   * Makes (or finds) the template of an OCI image reference, pulled with `login` when given
   * (api/oci-templates.ts); absent: refused.
   */
  imageTemplate?: ((reference: string, opId: string, login?: RegistryLogin) => Promise<string>) | undefined;
  /** A guest image's boot files by key (to boot a parent image with other resources). */
  image?: ((key: string) => Promise<BootImage>) | undefined;
  /** How long the ready command may take to pass. */
  readyTimeoutMs: number;
  /** How often the ready command is tried. */
  readyEveryMs?: number;
  /** Pulsed after every log line and record change (followers of the log wake). */
  watch: BuildWatch;
  /** What builds in progress hold, for template garbage collection. */
  leases: BuildLeases;
}

class BuildError extends Error {
  readonly step: string;
  constructor(message: string, step: string) {
    super(message);
    this.step = step;
  }
}

/**
 * The parent template: by name or id; `fromImage` of E2B's default image means kiln's `base`.
 * kiln's hidden templates are not names to build from: an OCI image's base (`kiln-img-*`, and its
 * `kiln-res-*` twins) is reached only through `fromImage`, which asks the registry with the
 * caller's credentials first; naming it with `fromTemplate` would skip that check.
 */
async function parentOf(
  d: BuildRunDeps,
  spec: BuildSpec,
  b: TemplateBuildRecord,
  opId: string,
  lease: BuildLease,
): Promise<TemplateRecord> {
  let ref: string;
  if ('template' in spec.from) ref = spec.from.template;
  else if (spec.from.image === E2B_DEFAULT_IMAGE) ref = 'base';
  else if (d.imageTemplate) {
    try {
      ref = await d.imageTemplate(spec.from.image, opId, spec.from.registry);
    } catch (e) {
      throw new BuildError(`fromImage("${spec.from.image}"): ${asKilnError(e).message}`, 'base');
    }
  } else
    throw new BuildError(
      `fromImage("${spec.from.image}"): OCI images are not served by this kilnd; use fromTemplate`,
      'base',
    );
  if (ref === 'base') await d.ensureTemplate('base', opId);
  const t = d.svc.templates().find((x) => x.name === ref || x.id === ref);
  const viaTemplate = 'template' in spec.from;
  if (!t?.snapshotId || (viaTemplate && isHiddenTemplateName(t.name)))
    throw new BuildError(`fromTemplate("${ref}"): no such template`, 'base');
  lease.hold(t.id, t.snapshotId);
  const p = await withResources(d, t, b, opId);
  lease.hold(p.id, p.snapshotId);
  lease.resolved();
  return p;
}

/**
 * The parent with the build's cpuCount / memoryMB: sandboxes restore the parent's memory
 * snapshot, so other resources need a parent booted with them. A template booted from an image
 * gets a twin `kiln-res-<mem>m<cpus>c-<template id>` booted from the same image (kept, reused);
 * a template built from steps keeps its running state's resources: other ones are refused.
 */
async function withResources(
  d: BuildRunDeps,
  t: TemplateRecord,
  b: TemplateBuildRecord,
  opId: string,
): Promise<TemplateRecord> {
  const mem = b.memoryMiB ?? t.memoryMiB;
  const cpus = b.vcpus ?? t.vcpus;
  if (mem === t.memoryMiB && cpus === t.vcpus) return t;
  const snap = d.svc.getSnapshot(t.snapshotId ?? '');
  if (snap.kind !== 'template' || !d.image)
    throw new BuildError(
      `cpuCount ${String(cpus)} / memoryMB ${String(mem)}: template "${t.name}" runs with ${String(t.vcpus)} vCPU(s) and ${String(t.memoryMiB)} MiB, and a template built on it restores its running state; build on one booted from an image (such as base) to choose them`,
      'base',
    );
  const name = `${RESOURCES_TEMPLATE_PREFIX}${String(mem)}m${String(cpus)}c-${t.id}`;
  const twin = d.svc.templates().find((x) => x.name === name);
  if (twin && d.svc.templateReady(twin)) return twin;
  const img = await d.image(t.imageKey);
  return d.svc.buildTemplate(name, img, { memoryMiB: mem, vcpus: cpus }, { opId });
}

/** One build in progress: its record, log, builder sandbox and step context. */
class BuildRun {
  readonly #d: BuildRunDeps;
  #b: TemplateBuildRecord;
  readonly #spec: BuildSpec;
  readonly log: BuildLog;
  readonly opId: string;
  readonly #ctx = initialContext();
  builder: string | undefined;
  readonly #signal: AbortSignal | undefined;
  readonly lease: BuildLease;
  readonly #op: OpRun;

  constructor(d: BuildRunDeps, b: TemplateBuildRecord, spec: BuildSpec, op: OpRun, signal?: AbortSignal) {
    this.#d = d;
    this.#b = b;
    this.#spec = spec;
    this.#signal = signal;
    this.#op = op;
    this.log = new BuildLog(d, b.id);
    // The operations a build makes (create, snapshot, kill) name its own as their request.
    this.opId = op.op.id;
    this.lease = d.leases.begin(b.id);
  }

  save(patch: Partial<TemplateBuildRecord>): void {
    this.#b = { ...this.#b, ...patch, updatedAt: new Date(this.#d.now()).toISOString() };
    this.#d.store.putBuild(this.#b);
    this.#d.watch.changed(this.#b.id);
  }

  async run(): Promise<void> {
    const d = this.#d;
    const t0 = d.now();
    const parent = await parentOf(d, this.#spec, this.#b, this.opId, this.lease);
    this.log.add('info', `[base] FROM template ${parent.name}`, 'base');
    const plan = planCache(d.svc, parent, this.#spec, this.#b.templateId, this.lease);
    this.#check('base');
    if (await this.#allCached(parent, plan)) return;
    const sbx = await d.svc.create(
      { template: plan.restoreFrom, timeoutS: 3600, metadata: { [BUILDER_METADATA_KEY]: this.#b.id } },
      { opId: this.opId },
    );
    this.builder = sbx.id;
    this.#op.step('builder', { action: 'end-sandbox', sandboxId: sbx.id, reason: INTERRUPTED });
    this.save({ builderId: sbx.id });
    const guest = new GuestSteps(
      d.svc,
      sbx.id,
      (line, stream) => {
        this.log.add(stream === 'stderr' ? 'warn' : 'info', line);
      },
      this.#signal,
    );
    const n = this.#spec.steps.length;
    let ran = 0;
    for (const [i, s] of this.#spec.steps.entries()) {
      const label = `[${String(i + 1)}/${String(n)}] ${describeStep(s)}`;
      if (i < plan.firstRun) {
        applyContext(this.#ctx, s);
        this.log.add('info', `CACHED ${label}`, String(i + 1));
        continue;
      }
      this.#check(String(i + 1));
      await this.#step(guest, s, i, label, plan);
      ran++;
    }
    this.#check('finalize');
    this.log.add('info', `${String(ran)} of ${String(n)} steps run, ${String(n - ran)} cached`, 'finalize');
    const final = await this.#finalize(guest, plan);
    this.log.add(
      'info',
      `template ${this.#b.templateName} built in ${((d.now() - t0) / 1000).toFixed(1)} s`,
      'finalize',
    );
    // The status last: a follower of the log ends at it, so every line must be written before.
    await this.#publish(parent, final, plan.layers);
  }

  /**
   * The template (new, or the name's existing one) points at `snap` and the build is ready, in
   * one transaction; then the previous running state of the template is freed.
   */
  async #publish(parent: TemplateRecord, snap: SnapshotRecord, layers: string[]): Promise<void> {
    const d = this.#d;
    const b = this.#b;
    const existing = d.svc.templates().find((t) => t.id === b.templateId);
    const now = new Date(d.now()).toISOString();
    this.#b = {
      ...b,
      status: 'ready',
      snapshotId: snap.id,
      layers,
      updatedAt: now,
      finishedAt: now,
    };
    d.store.publishBuild(
      {
        id: b.templateId,
        name: b.templateName,
        imageKey: parent.imageKey,
        memoryMiB: snap.memoryMiB,
        vcpus: snap.vcpus,
        snapshotId: snap.id,
        createdAt: existing?.createdAt ?? now,
        ownerKeyId: b.ownerKeyId,
      },
      this.#b,
    );
    d.watch.changed(b.id);
    this.#op.step('published', { action: 'none' });
    if (existing?.snapshotId && existing.snapshotId !== snap.id) {
      // The previous build's running state: hidden now, reclaimed once no sandbox stands on it.
      await d.svc.deleteSnapshot(existing.snapshotId).catch((e: unknown) => {
        d.log.warn(
          { snapshotId: existing.snapshotId, err: asKilnError(e).message },
          'old template snapshot kept',
        );
      });
    }
  }

  /** Every step and the start + ready commands as in a live build of this template: that build's state is the template's. */
  async #allCached(parent: TemplateRecord, plan: CachePlan): Promise<boolean> {
    if (this.#spec.force || plan.firstRun < this.#spec.steps.length) return false;
    const done = findLayer(this.#d.svc, '', plan.finalName);
    if (!done) return false;
    this.lease.hold(done.id);
    const n = String(this.#spec.steps.length);
    for (const [i, s] of this.#spec.steps.entries())
      this.log.add('info', `CACHED [${String(i + 1)}/${n}] ${describeStep(s)}`, String(i + 1));
    this.log.add('info', `0 of ${n} steps run, ${n} cached`, 'finalize');
    this.log.add(
      'info',
      'CACHED [finalize] start and ready commands: the running state is unchanged',
      'finalize',
    );
    await this.#publish(parent, done, plan.layers);
    return true;
  }

  /** Runs step `i` in the guest; a VM-changing one becomes a layer. */
  async #step(guest: GuestSteps, s: BuildStep, i: number, label: string, plan: CachePlan): Promise<void> {
    const d = this.#d;
    const step = String(i + 1);
    this.log.add('info', label, step);
    const ts = d.now();
    try {
      if (s.kind === 'RUN') {
        const code = await guest.run(s.cmd, this.#ctx, s.user ?? this.#ctx.user);
        if (code !== 0)
          throw new StepFailed(
            `step ${step} (${describeStep(s)}) failed with exit code ${String(code)}:\n${guest.tail.join('\n')}`,
            code,
          );
      } else if (s.kind === 'COPY') {
        if (!(await d.files.present(s.filesHash)))
          throw new StepFailed(
            `step ${step} (${describeStep(s)}): its files (${s.filesHash}) were not uploaded`,
            1,
          );
        await guest.copy(s, d.files.path(s.filesHash), this.#ctx);
      } else {
        applyContext(this.#ctx, s);
      }
    } catch (e) {
      throw new BuildError(e instanceof StepFailed ? e.message : asKilnError(e).message, step);
    }
    if (changesVm(s) && this.builder) {
      const key = plan.keys[i] ?? '';
      // A forced step replaces the layer its key had.
      const old = findLayer(d.svc, key);
      if (old) await d.svc.deleteSnapshot(old.id, { opId: this.opId });
      const snap = await d.svc.snapshot(this.builder, { name: layerName(key) }, { opId: this.opId });
      this.lease.hold(snap.id);
      plan.layers.push(snap.id);
      this.save({ layers: [...plan.layers] });
    }
    this.log.add('info', `done in ${((d.now() - ts) / 1000).toFixed(1)} s`, step);
  }

  /**
   * Env for login shells, the start command, the ready check, and the running VM's snapshot
   * (published by the caller after its last log line).
   */
  async #finalize(guest: GuestSteps, plan: CachePlan): Promise<SnapshotRecord> {
    const d = this.#d;
    await guest.persistEnv(this.#ctx);
    // The last USER and WORKDIR are the defaults of the template's sandboxes (as in E2B): set in
    // the builder's agent, they are in the snapshot every sandbox restores.
    const last = (kind: 'USER' | 'WORKDIR') => this.#spec.steps.some((s) => s.kind === kind);
    if (!this.builder) throw new KilnError('internal', 'the build has no builder sandbox');
    if (last('USER') || last('WORKDIR')) {
      await d.svc.setGuestDefaults(
        this.builder,
        {
          ...(last('USER') ? { user: this.#ctx.user } : {}),
          ...(last('WORKDIR') ? { workdir: this.#ctx.workdir } : {}),
        },
        { opId: this.opId },
      );
      this.log.add(
        'info',
        `[finalize] sandboxes run commands as ${last('USER') ? this.#ctx.user : 'user'}${last('WORKDIR') ? ` in ${this.#ctx.workdir}` : ''}`,
        'finalize',
      );
    }
    if (this.#spec.startCmd) {
      this.log.add('info', `[finalize] start command: ${this.#spec.startCmd}`, 'finalize');
      await guest.start(this.#spec.startCmd, this.#ctx);
    }
    if (this.#spec.readyCmd)
      await waitReady(d, guest, this.#spec.readyCmd, this.#ctx, this.log, this.#signal);
    // A forced rebuild replaces the running state this definition had.
    const old = findLayer(d.svc, '', plan.finalName);
    if (old) {
      // Detached first: the store refuses to delete a template's own snapshot.
      const owner = d.svc.templates().find((t) => t.snapshotId === old.id);
      if (owner) d.store.putTemplate({ ...owner, snapshotId: null });
      await d.svc.deleteSnapshot(old.id, { opId: this.opId });
    }
    return d.svc.snapshot(this.builder, { name: plan.finalName }, { opId: this.opId });
  }

  /** Between steps: a cancelled build stops here (its builder is killed by runBuild). */
  #check(step: string): void {
    if (this.#signal?.aborted) throw new BuildError(CANCELLED, step);
  }

  failed(e: unknown): void {
    const message = this.#signal?.aborted
      ? CANCELLED
      : e instanceof BuildError
        ? e.message
        : `build failed: ${asKilnError(e).message}`;
    const step = e instanceof BuildError ? e.step : 'finalize';
    this.#d.log.warn({ buildId: this.#b.id, err: message }, 'template build failed');
    this.log.add('error', message, step);
    this.save({
      status: 'error',
      reason: { message, step },
      finishedAt: new Date(this.#d.now()).toISOString(),
    });
  }
}

/** The reason of a cancelled build. */
export const CANCELLED = 'the build was cancelled';
/** The reason of a build that was running when kilnd died (set by its journal undo at start-up). */
export const INTERRUPTED = 'interrupted by a daemon restart';

/**
 * Runs build `b` with definition `spec` as one journalled operation; records its outcome (never
 * throws). `signal` cancels it: the running step's command is dropped, no later step or layer is
 * made, the builder is killed.
 */
export async function runBuild(
  d: BuildRunDeps,
  b: TemplateBuildRecord,
  spec: BuildSpec,
  signal?: AbortSignal,
): Promise<void> {
  const op = d.svc.beginOperation('build', b.id);
  let err: unknown;
  let r: BuildRun | undefined;
  try {
    op.step('build', { action: 'fail-build', buildId: b.id, reason: INTERRUPTED });
    r = new BuildRun(d, b, spec, op, signal);
    await r.run();
  } catch (e) {
    err = e;
    r?.failed(e);
  }
  if (r) {
    // An ordinary (journalled) kill; after a crash the op's `builder` undo ends it instead.
    if (r.builder) await killQuietly(d, r.builder, r.opId);
    r.lease.release();
    r.save({ builderId: null });
  }
  if (err === undefined) op.done();
  else await op.fail(err);
}

async function killQuietly(d: BuildRunDeps, id: string, opId: string): Promise<void> {
  try {
    await d.svc.kill(id, { opId }, 'template build finished');
  } catch (e) {
    d.log.warn({ sandboxId: id, err: asKilnError(e).message }, 'builder sandbox kill failed');
  }
}

/** Tries the ready command until it exits 0; past the deadline the build fails with its output. */
async function waitReady(
  d: BuildRunDeps,
  guest: GuestSteps,
  cmd: string,
  ctx: ReturnType<typeof initialContext>,
  log: BuildLog,
  signal: AbortSignal | undefined,
): Promise<void> {
  log.add('info', `[finalize] waiting for the ready command: ${cmd}`, 'finalize');
  const deadline = d.now() + d.readyTimeoutMs;
  let tries = 0;
  for (;;) {
    if (signal?.aborted) throw new BuildError(CANCELLED, 'finalize');
    tries++;
    const code = await guest.run(cmd, ctx, ctx.user, { quiet: true });
    if (code === 0) {
      log.add('info', `ready after ${tries} tr${tries === 1 ? 'y' : 'ies'}`, 'finalize');
      return;
    }
    if (d.now() >= deadline) {
      const out = await guest.startLog().catch(() => '');
      throw new BuildError(
        `the ready command did not succeed within ${Math.round(d.readyTimeoutMs / 1000)} s (last exit code ${code}): ${cmd}` +
          (out ? `\nstart command output:\n${out}` : ''),
        'finalize',
      );
    }
    await new Promise((r) => setTimeout(r, d.readyEveryMs ?? 1000));
  }
}
