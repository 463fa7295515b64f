/**
 * Template builds (issue 14) behind both APIs: request a build of a name (E2B's POST
 * /v3/templates), start it with its definition (run-build.ts runs it in the background), answer
 * its status and logs, list and delete templates with their layers, and at start-up fail the
 * builds a dead kilnd left requested but never started (a started one is a journalled operation).
 */
import type { Logger } from 'pino';
import type { TemplateBuildRecord, TemplateRecord } from '../../core/domain.ts';
import { KilnError, asKilnError, invalidArgument } from '../../core/errors.ts';
import { newId } from '../../core/ids.ts';
import {
  DELETED_TEMPLATE_PREFIX,
  isInternalSnapshotName,
  parseLogsOffset,
  parseBuildSpec,
  splitNameTag,
  type BuildLogEntry,
  type BuildSpec,
} from '../../core/template-steps.ts';
import { validateMemoryMiB, validateName, validateVcpus } from '../../core/validate.ts';
import type { Store } from '../../store/store.ts';
import { sees, seesTemplate, type Caller } from '../scope.ts';
import type { SandboxService } from '../sandbox-service.ts';
import { BuildWatch, followBuild, type BuildFollowEvent } from './build-follow.ts';
import { BuildFiles } from './files.ts';
import { DEFAULT_TEMPLATE_GC_AFTER_S, TemplateCollector } from './gc.ts';
import { BuildLeases } from './leases.ts';
import { INTERRUPTED, runBuild, type BuildRunDeps } from './run-build.ts';

export { INTERRUPTED } from './run-build.ts';

export interface TemplateBuildServiceOpts {
  svc: SandboxService;
  store: Store;
  dataDir: string;
  log: Logger;
  now?: () => number;
  ensureTemplate: (name: string, opId: string) => Promise<void>;
  /** Makes the template of an OCI image reference (fromImage); absent, such builds are refused. */
  imageTemplate?: BuildRunDeps['imageTemplate'];
  /** Boot files of an image by key (cpuCount / memoryMB other than the parent's). */
  image?: BuildRunDeps['image'];
  /** How long a ready command may take to pass (default 120 s). */
  readyTimeoutMs?: number;
  /** Template garbage collection's grace period (ms; default a day; $KILN_TEMPLATE_GC_AFTER_S). */
  gcAfterMs?: number | undefined;
}

/** A template as the APIs show it: its record once built, and its builds. */
export interface TemplateView {
  templateId: string;
  name: string;
  ownerKeyId: string | null;
  template: TemplateRecord | undefined;
  builds: TemplateBuildRecord[];
}

export class TemplateBuildService {
  readonly files: BuildFiles;
  /** Pulsed on every log line and record change of a build (followers of its log wait on it). */
  readonly watch = new BuildWatch();
  /** Template garbage collection: the hidden templates and layers builds left that nothing uses. */
  readonly gc: TemplateCollector;
  readonly #d: BuildRunDeps;
  readonly #running = new Map<string, Promise<void>>();
  readonly #cancels = new Map<string, AbortController>();

  constructor(o: TemplateBuildServiceOpts) {
    const now = o.now ?? Date.now;
    this.files = new BuildFiles(o.dataDir, now);
    const log = o.log.child({ component: 'template-builds' });
    const leases = new BuildLeases((ids) => {
      try {
        o.store.touchSnapshots(ids, new Date(now()).toISOString());
      } catch (e) {
        log.warn({ err: asKilnError(e).message }, 'recording the use of template layers failed');
      }
    });
    this.gc = new TemplateCollector({
      svc: o.svc,
      store: o.store,
      leases,
      log: o.log.child({ component: 'template-gc' }),
      now,
      graceMs: o.gcAfterMs ?? DEFAULT_TEMPLATE_GC_AFTER_S * 1000,
    });
    this.#d = {
      svc: o.svc,
      store: o.store,
      files: this.files,
      log,
      now,
      leases,
      ensureTemplate: o.ensureTemplate,
      readyTimeoutMs: o.readyTimeoutMs ?? 120_000,
      imageTemplate: o.imageTemplate,
      image: o.image,
      watch: this.watch,
    };
  }

  #iso(): string {
    return new Date(this.#d.now()).toISOString();
  }

  /**
   * A new build of `ref` (`name` or `name:tag`): the template keeps its id across builds of one
   * name. A second build of a name while one runs is refused (`conflict`).
   */
  request(
    ref: string,
    o: { tags?: string[]; vcpus?: number; memoryMiB?: number },
    caller: Caller | undefined,
  ): TemplateBuildRecord {
    const { name, tag } = splitNameTag(ref);
    validateName('name', name);
    if (name === 'base')
      throw invalidArgument('name', '"base" is kiln\'s default template; pick another name');
    if (o.vcpus !== undefined) validateVcpus(o.vcpus);
    if (o.memoryMiB !== undefined) validateMemoryMiB(o.memoryMiB);
    const tpl = this.#d.store.listTemplates().find((t) => t.name === name);
    if (tpl && !seesTemplate(caller, tpl))
      throw new KilnError('already_exists', `template name "${name}" is taken`);
    if (tpl && tpl.ownerKeyId === null && caller && !caller.admin)
      throw new KilnError('already_exists', `template "${name}" is kiln's own; pick another name`);
    const builds = this.#d.store.listBuilds().filter((b) => b.templateName === name);
    if (builds.some((b) => b.status === 'building'))
      throw new KilnError('conflict', `template "${name}" is being built; wait for that build to end`);
    const now = this.#iso();
    const b: TemplateBuildRecord = {
      id: newId('bld', 16),
      templateId: tpl?.id ?? builds.at(-1)?.templateId ?? newId('tpl'),
      templateName: name,
      ownerKeyId: tpl ? tpl.ownerKeyId : caller && !caller.admin ? caller.keyId : (caller?.keyId ?? null),
      tags: [...new Set([...(tag ? [tag] : []), ...(o.tags ?? [])])],
      status: 'building',
      vcpus: o.vcpus ?? null,
      memoryMiB: o.memoryMiB ?? null,
      spec: null,
      reason: null,
      builderId: null,
      layers: [],
      snapshotId: null,
      createdAt: now,
      updatedAt: now,
      finishedAt: null,
    };
    this.#d.store.putBuild(b);
    return b;
  }

  /** The build `buildId` of template `templateId`, if the caller sees it. */
  build(templateId: string, buildId: string, caller: Caller | undefined): TemplateBuildRecord {
    let b: TemplateBuildRecord;
    try {
      b = this.#d.store.getBuild(buildId);
    } catch (e) {
      if (e instanceof KilnError && e.code === 'not_found')
        throw new KilnError('not_found', `template build "${buildId}" does not exist`);
      throw e;
    }
    if ((b.templateId !== templateId && b.templateName !== templateId) || !sees(caller, b.ownerKeyId))
      throw new KilnError('not_found', `template build "${buildId}" of "${templateId}" does not exist`);
    return b;
  }

  /** A build by its id alone, if the caller sees it. */
  buildById(buildId: string, caller: Caller | undefined): TemplateBuildRecord {
    const b = this.#d.store.getBuild(buildId);
    if (!sees(caller, b.ownerKeyId))
      throw new KilnError('not_found', `template build "${buildId}" does not exist`);
    return b;
  }

  /** Starts build `buildId` with E2B's `TemplateBuildStartV2` body; it runs in the background. */
  start(
    templateId: string,
    buildId: string,
    body: Record<string, unknown>,
    caller: Caller | undefined,
  ): void {
    const b = this.build(templateId, buildId, caller);
    if (b.spec !== null || b.status !== 'building')
      throw new KilnError('invalid_state', `template build "${buildId}" was started already`);
    let spec: BuildSpec;
    try {
      spec = parseBuildSpec(body);
    } catch (e) {
      // Refused at its start, the build ends there: the name is free for the next one.
      const now = this.#iso();
      const reason = { message: asKilnError(e).message, step: 'base' };
      this.#d.store.appendBuildLog(b.id, { timestamp: now, level: 'error', message: reason.message });
      this.#d.store.putBuild({ ...b, status: 'error', reason, updatedAt: now, finishedAt: now });
      this.#d.watch.changed(b.id);
      throw e;
    }
    // Stored as JSON: registry credentials (a RegistryLogin) show only that they were given.
    const started = { ...b, spec: JSON.stringify(spec), updatedAt: this.#iso() };
    this.#d.store.putBuild(started);
    const ac = new AbortController();
    const p = runBuild(this.#d, started, spec, ac.signal).finally(() => {
      this.#running.delete(buildId);
      this.#cancels.delete(buildId);
    });
    this.#running.set(buildId, p);
    this.#cancels.set(buildId, ac);
  }

  /**
   * Cancels a running build (`kiln template build` interrupted): its running command is dropped,
   * no later step or layer is made, its builder sandbox is killed, and it ends `error` with the
   * reason "the build was cancelled". Resolves once it has ended; `invalid_state` for a build
   * that is not running. Layers of steps that finished stay in the cache (complete, hidden).
   */
  async cancel(buildId: string, caller: Caller | undefined): Promise<TemplateBuildRecord> {
    const b = this.buildById(buildId, caller);
    const ac = this.#cancels.get(b.id);
    if (b.status !== 'building' || !ac)
      throw new KilnError('invalid_state', `template build "${buildId}" is ${b.status}, not running`);
    ac.abort();
    await this.#running.get(b.id);
    return this.buildById(buildId, caller);
  }

  /** Status and the log lines from `offset` (E2B's TemplateBuildInfo); the reason's last lines. */
  status(
    templateId: string,
    buildId: string,
    offset: unknown,
    caller: Caller | undefined,
  ): { build: TemplateBuildRecord; logs: BuildLogEntry[]; tail: BuildLogEntry[] } {
    const b = this.build(templateId, buildId, caller);
    const from = parseLogsOffset(offset);
    const logs = this.#d.store.buildLogs(b.id, from, 100);
    const tail = b.status === 'error' ? this.#d.store.buildLogs(b.id, 0, 100_000).slice(-20) : [];
    return { build: b, logs, tail };
  }

  /**
   * Follows the log of build `buildId` of template `templateId` from line `offset`: the lines
   * written so far, then each line as it is written, then the build's end (build-follow.ts).
   * Visibility and the offset are checked at once (a caller that does not see the build gets
   * `not_found` before any event); `signal` ends the following.
   */
  follow(
    templateId: string,
    buildId: string,
    offset: unknown,
    caller: Caller | undefined,
    signal?: AbortSignal,
  ): AsyncGenerator<BuildFollowEvent, void, undefined> {
    const b = this.build(templateId, buildId, caller);
    return followBuild(this.#d.store, this.watch, b.id, parseLogsOffset(offset), signal);
  }

  /** Templates the caller sees: built ones and those with builds only. */
  list(caller: Caller | undefined): TemplateView[] {
    const builds = this.#d.store.listBuilds();
    const out = new Map<string, TemplateView>();
    for (const t of this.#d.store.listTemplates()) {
      // kiln's internal templates (deleted ones kept for their sandboxes, OCI image bases) are not shown.
      if (!seesTemplate(caller, t) || t.name.startsWith('kiln-')) continue;
      out.set(t.id, { templateId: t.id, name: t.name, ownerKeyId: t.ownerKeyId, template: t, builds: [] });
    }
    for (const b of builds) {
      let v = out.get(b.templateId);
      if (!v) {
        if (!sees(caller, b.ownerKeyId) || this.#tombstoned(b.templateId)) continue;
        v = {
          templateId: b.templateId,
          name: b.templateName,
          ownerKeyId: b.ownerKeyId,
          template: undefined,
          builds: [],
        };
        out.set(b.templateId, v);
      }
      v.builds.push(b);
    }
    return [...out.values()];
  }

  #tombstoned(id: string): boolean {
    return this.#d.store
      .listTemplates()
      .some((t) => t.id === id && t.name.startsWith(DELETED_TEMPLATE_PREFIX));
  }

  /** One template by id or name, or `not_found`. */
  get(ref: string, caller: Caller | undefined): TemplateView {
    const v = this.list(caller).find((x) => x.templateId === ref || x.name === ref);
    if (!v)
      throw new KilnError('not_found', `template "${ref}" does not exist`, { details: { template: ref } });
    return v;
  }

  /**
   * Deletes a built template: its running-state snapshot and the layers no other template's
   * build uses are hidden (reclaimed once no sandbox stands on them); its builds go; its warm
   * pool is drained. Refused
   * while it builds. Sandboxes made from it keep running on their layers.
   */
  async delete(ref: string, caller: Caller | undefined, opId: string): Promise<void> {
    const v = this.get(ref, caller);
    if (v.template?.ownerKeyId === null && v.builds.length === 0)
      throw new KilnError(
        'invalid_state',
        `template "${v.name}" is kiln's own; remove it with \`kiln template rm\``,
      );
    if (v.builds.some((b) => b.status === 'building'))
      throw new KilnError('conflict', `template "${v.name}" is being built; wait for that build to end`);
    const t = v.template;
    if (t) {
      // Detach the snapshot first: the store refuses to delete a template's own snapshot; no
      // new warm pool member is made of a template without one. Then its pool is drained: its
      // VMs stand on the snapshot's layer.
      this.#d.store.putTemplate({ ...t, snapshotId: null });
      await this.#d.svc.drainWarmPool(t.id);
      if (t.snapshotId) await this.#hide(t.snapshotId, opId);
    }
    const others = this.#d.store.listBuilds().filter((b) => b.templateId !== v.templateId);
    const used = new Set(others.flatMap((b) => b.layers));
    for (const b of v.builds) for (const l of b.layers) if (!used.has(l)) await this.#hide(l, opId);
    this.#d.store.deleteBuilds(v.templateId);
    if (t) {
      try {
        this.#d.store.deleteTemplate(t.id);
      } catch (e) {
        // Sandboxes made from it still name it: keep the record under a name no one can use.
        if (!(e instanceof KilnError && e.code === 'invalid_state')) throw e;
        this.#d.store.putTemplate({ ...t, name: `${DELETED_TEMPLATE_PREFIX}${t.id}`, snapshotId: null });
      }
    }
  }

  async #hide(snapshotId: string, opId: string): Promise<void> {
    try {
      const s = this.#d.svc.getSnapshot(snapshotId);
      if (s.deletedAt === null && isInternalSnapshotName(s.name))
        await this.#d.svc.deleteSnapshot(s.id, { opId });
    } catch (e) {
      const k = asKilnError(e);
      if (k.code !== 'not_found') this.#d.log.warn({ snapshotId, err: k.message }, 'layer not deleted');
    }
  }

  /**
   * Tags (E2B's): each names one build of a template; kiln keeps only the latest build's
   * running state, so a tag resolves while it names the template's current build.
   */
  assignTags(target: string, tags: string[], caller: Caller | undefined): TemplateBuildRecord {
    const { name, tag } = splitNameTag(target);
    const v = this.get(name, caller);
    const b = tag
      ? v.builds.find((x) => x.tags.includes(tag))
      : [...v.builds].reverse().find((x) => x.status === 'ready');
    if (!b) throw new KilnError('not_found', `template "${target}" has no such build`);
    for (const t of tags) validateName('tags', t);
    for (const o of v.builds)
      if (o.id !== b.id && o.tags.some((t) => tags.includes(t)))
        this.#d.store.putBuild({ ...o, tags: o.tags.filter((t) => !tags.includes(t)) });
    const next = { ...b, tags: [...new Set([...b.tags, ...tags])] };
    this.#d.store.putBuild(next);
    return next;
  }

  removeTags(name: string, tags: string[], caller: Caller | undefined): void {
    const v = this.get(name, caller);
    for (const b of v.builds)
      if (b.tags.some((t) => tags.includes(t)))
        this.#d.store.putBuild({ ...b, tags: b.tags.filter((t) => !tags.includes(t)) });
  }

  /** `name:tag` to the template's name when the tag names its current build; `not_found` otherwise. */
  resolveTag(ref: string, caller: Caller | undefined): string {
    const { name, tag } = splitNameTag(ref);
    if (tag === undefined) return ref;
    const v = this.get(name, caller);
    const cur = v.template?.snapshotId;
    const b = v.builds.find((x) => x.tags.includes(tag));
    if (b && cur && b.snapshotId === cur) return name;
    if (!b && tag === 'default' && cur) return name;
    throw new KilnError('not_found', `template "${ref}" does not exist (the tag names no current build)`);
  }

  /** Log lines of a build from `offset`, at most `limit`. */
  logs(
    templateId: string,
    buildId: string,
    offset: number,
    limit: number,
    caller: Caller | undefined,
  ): BuildLogEntry[] {
    const b = this.build(templateId, buildId, caller);
    return this.#d.store.buildLogs(b.id, offset, limit);
  }

  /**
   * Start-up, after the journal's replay: a started build is one journalled operation, so replay
   * has already failed (or found published) every build a dead kilnd was running. What is left
   * `building` here was requested and never started (E2B's create, then no build call), or run by
   * a kilnd older than the build operation: failed, with its builder sandbox killed.
   */
  async recover(): Promise<string[]> {
    const failed: string[] = [];
    for (const b of this.#d.store.listBuilds()) {
      if (b.status !== 'building' || this.#running.has(b.id)) continue;
      if (b.builderId) {
        try {
          const s = this.#d.svc.get(b.builderId);
          if (s.state !== 'dead') await this.#d.svc.kill(s.id, {}, INTERRUPTED);
        } catch (e) {
          this.#d.log.warn({ buildId: b.id, err: asKilnError(e).message }, 'builder sandbox not killed');
        }
      }
      const now = this.#iso();
      // The line before the status: a follower of the log ends at the status.
      this.#d.store.appendBuildLog(b.id, { timestamp: now, level: 'error', message: INTERRUPTED });
      this.#d.store.putBuild({
        ...b,
        status: 'error',
        reason: { message: INTERRUPTED, step: 'finalize' },
        builderId: null,
        updatedAt: now,
        finishedAt: now,
      });
      this.watch.changed(b.id);
      failed.push(b.id);
    }
    if (failed.length)
      this.#d.log.warn({ builds: failed }, 'template builds interrupted by a restart failed');
    return failed;
  }

  /** Stops template garbage collection (a pass in progress ends first) and waits for running builds. */
  async close(): Promise<void> {
    await this.gc.stop();
    await this.idle();
  }

  /** Resolves when every running build has ended (tests, shutdown). */
  async idle(): Promise<void> {
    await Promise.allSettled([...this.#running.values()]);
  }
}
