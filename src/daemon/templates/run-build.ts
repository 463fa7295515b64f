/**
 * One template build, start to end: a builder sandbox of kiln's own restored from the deepest
 * cached layer (or the parent template), the steps from the first one the cache does not hold
 * (each VM-changing step snapshotted as a layer `kiln-layer-<key>`), then the start command, the
 * ready check, and a snapshot of the RUNNING VM that becomes the template.
 *
 * Crash safety: every snapshot is kiln's journalled snapshot operation (a layer is whole or
 * absent); the builder is an ordinary sandbox whose id the build record holds, so start-up
 * (build-service.ts `recover`) kills it and marks the build failed.
 */
import type { Logger } from 'pino';
import type { SnapshotRecord, TemplateBuildRecord, TemplateRecord } from '../../core/domain.ts';
import { KilnError, asKilnError } from '../../core/errors.ts';
import {
  E2B_DEFAULT_IMAGE,
  TEMPLATE_SNAP_PREFIX,
  changesVm,
  describeStep,
  layerKey,
  layerName,
  rootLayerKey,
  type BuildLogEntry,
  type BuildSpec,
} from '../../core/template-steps.ts';
import type { Store } from '../../store/store.ts';
import type { SandboxService } from '../sandbox-service.ts';
import type { BuildFiles } from './files.ts';
import { GuestSteps, StepFailed, applyContext, initialContext } from './guest-steps.ts';

export interface BuildRunDeps {
  svc: SandboxService;
  store: Store;
  files: BuildFiles;
  log: Logger;
  now: () => number;
  /** Builds kiln's default template on first use (TemplateEnsurer). */
  ensureTemplate: (name: string, opId: string) => Promise<void>;
  /** How long the ready command may take to pass. */
  readyTimeoutMs: number;
  /** How often the ready command is tried. */
  readyEveryMs?: number;
}

/** A build's log: persisted line by line (status answers from it, also after a restart). */
export class BuildLog {
  readonly #store: Store;
  readonly #buildId: string;
  readonly #now: () => number;
  constructor(store: Store, buildId: string, now: () => number) {
    this.#store = store;
    this.#buildId = buildId;
    this.#now = now;
  }
  add(level: BuildLogEntry['level'], message: string, step?: string): void {
    this.#store.appendBuildLog(this.#buildId, {
      timestamp: new Date(this.#now()).toISOString(),
      level,
      message,
      ...(step !== undefined ? { step } : {}),
    });
  }
}

class BuildError extends Error {
  readonly step: string;
  constructor(message: string, step: string) {
    super(message);
    this.step = step;
  }
}

/** The parent template: by name or id; `fromImage` of E2B's default image means kiln's `base`. */
async function parentOf(d: BuildRunDeps, spec: BuildSpec, opId: string): Promise<TemplateRecord> {
  let ref: string;
  if ('template' in spec.from) ref = spec.from.template;
  else if (spec.from.image === E2B_DEFAULT_IMAGE) ref = 'base';
  else
    throw new BuildError(
      `fromImage("${spec.from.image}"): OCI images as a template base are not supported by kiln's template builds yet; build the image with \`kiln image build --from-image\` and a template of it, then use fromTemplate`,
      'base',
    );
  if (ref === 'base') await d.ensureTemplate('base', opId);
  const t = d.svc.templates().find((x) => x.name === ref || x.id === ref);
  if (!t?.snapshotId) throw new BuildError(`fromTemplate("${ref}"): no such template`, 'base');
  return t;
}

/** A live layer snapshot by key, if the cache holds it. */
function findLayer(svc: SandboxService, key: string): SnapshotRecord | undefined {
  try {
    const s = svc.getSnapshot(layerName(key));
    return s.deletedAt === null ? s : undefined;
  } catch (e) {
    if (e instanceof KilnError && e.code === 'not_found') return undefined;
    throw e;
  }
}

/** Runs build `b` with definition `spec`; records its outcome (never throws). */
export async function runBuild(d: BuildRunDeps, b: TemplateBuildRecord, spec: BuildSpec): Promise<void> {
  const opId = `op-build-${b.id.slice(0, 12)}`;
  const log = new BuildLog(d.store, b.id, d.now);
  const save = (patch: Partial<TemplateBuildRecord>): void => {
    b = { ...b, ...patch, updatedAt: new Date(d.now()).toISOString() };
    d.store.putBuild(b);
  };
  const t0 = d.now();
  let builder: string | undefined;
  try {
    const parent = await parentOf(d, spec, opId);
    const n = spec.steps.length;
    log.add('info', `[base] FROM template ${parent.name}`, 'base');
    // Plan: the layer keys, and how far the cache reaches (until a miss or a forced step).
    const keys: string[] = [];
    let key = rootLayerKey(parent.snapshotId ?? '');
    for (const s of spec.steps) keys.push((key = layerKey(key, s)));
    let restoreFrom = parent.name;
    const layers: string[] = [];
    let firstRun = n;
    for (let i = 0; i < n; i++) {
      const s = spec.steps[i];
      if (!s) break;
      if (spec.force || s.force) {
        firstRun = i;
        break;
      }
      if (!changesVm(s)) continue;
      const hit = findLayer(d.svc, keys[i] ?? '');
      if (!hit) {
        firstRun = i;
        break;
      }
      restoreFrom = hit.id;
      layers.push(hit.id);
    }
    const sbx = await d.svc.create(
      { template: restoreFrom, timeoutS: 3600, metadata: { 'kiln.templateBuild': b.id } },
      { opId },
    );
    builder = sbx.id;
    save({ builderId: builder });
    const guest = new GuestSteps(d.svc, builder, (line, stream) =>
      log.add(stream === 'stderr' ? 'warn' : 'info', line),
    );
    const ctx = initialContext();
    let ran = 0;
    for (let i = 0; i < n; i++) {
      const s = spec.steps[i];
      if (!s) break;
      const step = String(i + 1);
      const label = `[${step}/${n}] ${describeStep(s)}`;
      if (i < firstRun) {
        applyContext(ctx, s);
        log.add('info', `CACHED ${label}`, step);
        continue;
      }
      log.add('info', label, step);
      const ts = d.now();
      try {
        if (s.kind === 'RUN') {
          const code = await guest.run(s.cmd, ctx, s.user ?? ctx.user);
          if (code !== 0)
            throw new StepFailed(
              `step ${step} (${describeStep(s)}) failed with exit code ${code}:\n${guest.tail.join('\n')}`,
              code,
            );
        } else if (s.kind === 'COPY') {
          if (!(await d.files.present(s.filesHash)))
            throw new StepFailed(`step ${step} (${describeStep(s)}): its files (${s.filesHash}) were not uploaded`, 1);
          await guest.copy(s, d.files.path(s.filesHash), ctx);
        } else {
          applyContext(ctx, s);
        }
      } catch (e) {
        throw new BuildError(e instanceof StepFailed ? e.message : asKilnError(e).message, step);
      }
      ran++;
      if (changesVm(s)) {
        const name = layerName(keys[i] ?? '');
        // A forced step replaces the layer its key had.
        const old = findLayer(d.svc, keys[i] ?? '');
        if (old) await d.svc.deleteSnapshot(old.id, { opId });
        const snap = await d.svc.snapshot(builder, { name }, { opId });
        layers.push(snap.id);
        save({ layers: [...layers] });
      }
      log.add('info', `done in ${((d.now() - ts) / 1000).toFixed(1)} s`, step);
    }
    log.add('info', `${ran} of ${n} steps run, ${n - ran} cached`, 'finalize');
    await guest.persistEnv(ctx);
    if (spec.startCmd) {
      log.add('info', `[finalize] start command: ${spec.startCmd}`, 'finalize');
      await guest.start(spec.startCmd, ctx);
    }
    if (spec.readyCmd) await waitReady(d, guest, spec.readyCmd, ctx, log);
    const final = await d.svc.snapshot(builder, { name: `${TEMPLATE_SNAP_PREFIX}${b.id}` }, { opId });
    await finishTemplate(d, b, parent, final, layers);
    save({ status: 'ready', snapshotId: final.id, layers, finishedAt: new Date(d.now()).toISOString() });
    log.add('info', `template ${b.templateName} built in ${((d.now() - t0) / 1000).toFixed(1)} s`, 'finalize');
  } catch (e) {
    const message = e instanceof BuildError ? e.message : `build failed: ${asKilnError(e).message}`;
    const step = e instanceof BuildError ? e.step : 'finalize';
    d.log.warn({ buildId: b.id, err: message }, 'template build failed');
    log.add('error', message, step);
    save({ status: 'error', reason: { message, step }, finishedAt: new Date(d.now()).toISOString() });
  } finally {
    if (builder) await killQuietly(d, builder, opId);
    save({ builderId: null });
  }
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
): Promise<void> {
  log.add('info', `[finalize] waiting for the ready command: ${cmd}`, 'finalize');
  const deadline = d.now() + d.readyTimeoutMs;
  let tries = 0;
  for (;;) {
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

/** Points the template (new, or the name's existing one) at its new snapshot; frees the old one. */
async function finishTemplate(
  d: BuildRunDeps,
  b: TemplateBuildRecord,
  parent: TemplateRecord,
  snap: SnapshotRecord,
  layers: string[],
): Promise<void> {
  const existing = d.svc.templates().find((t) => t.id === b.templateId);
  d.store.putTemplate({
    id: b.templateId,
    name: b.templateName,
    imageKey: parent.imageKey,
    memoryMiB: snap.memoryMiB,
    vcpus: snap.vcpus,
    snapshotId: snap.id,
    createdAt: existing?.createdAt ?? new Date(d.now()).toISOString(),
    ownerKeyId: b.ownerKeyId,
  });
  if (existing?.snapshotId && existing.snapshotId !== snap.id) {
    // The previous build's running state: hidden now, reclaimed once no sandbox stands on it.
    await d.svc.deleteSnapshot(existing.snapshotId).catch((e: unknown) => {
      d.log.warn({ snapshotId: existing.snapshotId, err: asKilnError(e).message }, 'old template snapshot kept');
    });
  }
  void layers;
}
