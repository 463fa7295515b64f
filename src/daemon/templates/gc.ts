/**
 * Template garbage collection (issue 14): removes the hidden templates and snapshots template
 * builds leave behind once nothing depends on them and they went unused for a grace period
 * (what goes and what stays: gc-plan.ts). Each removal is one journalled operation
 * (sandbox/collect.ts). It runs in kilnd's background (every KILN_TEMPLATE_GC_EVERY_S) and on
 * demand (`POST /v1/templates/gc`, `kiln template gc`), one pass at a time; a dry run only
 * answers what a pass would remove.
 */
import type { Logger } from 'pino';
import type { TemplateGcItemView, TemplateGcView } from '../../core/api-types.ts';
import { asKilnError, invalidArgument } from '../../core/errors.ts';
import type { Store } from '../../store/store.ts';
import { every } from '../monitors/loops.ts';
import type { SandboxService } from '../sandbox-service.ts';
import { planCollection, type GcUnit, type GcWorld } from './gc-plan.ts';
import type { BuildLeases } from './leases.ts';

/** KILN_TEMPLATE_GC_AFTER_S's default: a hidden template or layer unused for a day may go. */
export const DEFAULT_TEMPLATE_GC_AFTER_S = 24 * 3600;
/** KILN_TEMPLATE_GC_EVERY_S's default: the background pass runs hourly. */
export const DEFAULT_TEMPLATE_GC_EVERY_S = 3600;

export interface TemplateCollectorOpts {
  svc: SandboxService;
  store: Store;
  leases: BuildLeases;
  log: Logger;
  now: () => number;
  /** The grace period (ms) when a pass names none. */
  graceMs: number;
}

export interface CollectOpts {
  /** Only answer what would be removed; nothing changes (not even use times). */
  dryRun?: boolean;
  /** This pass's grace period (ms). */
  graceMs?: number;
  opId?: string;
}

const view = (u: GcUnit, reason: string | null): TemplateGcItemView => ({
  kind: u.kind,
  templateId: u.templateId,
  snapshotId: u.snapshotId,
  name: u.name,
  bytes: u.bytes,
  lastUsedAt: u.lastUsedAt,
  reason,
});

export class TemplateCollector {
  readonly #o: TemplateCollectorOpts;
  #pass: Promise<unknown> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;

  constructor(o: TemplateCollectorOpts) {
    this.#o = o;
  }

  /** One pass (after any pass in progress): what it removed and what it kept, and why. */
  collect(o: CollectOpts = {}): Promise<TemplateGcView> {
    const graceMs = o.graceMs ?? this.#o.graceMs;
    if (!Number.isFinite(graceMs) || graceMs < 0)
      throw invalidArgument('graceS', `must be a number of seconds >= 0, got ${String(graceMs / 1000)}`);
    const p = this.#pass.then(() => this.#collect({ ...o, graceMs }));
    this.#pass = p.catch(() => undefined);
    return p;
  }

  /** The records and facts a decision reads, now. */
  #world(graceMs: number): GcWorld {
    const { store, leases } = this.#o;
    return {
      templates: store.listTemplates(),
      snapshots: store.listSnapshots(),
      builds: store.listBuilds(),
      uses: store.snapshotUses(),
      dependents: (id) => store.snapshotDependents(id),
      named: (id) => store.listSandboxes({ templateId: id }, { limit: 1 }).items.length > 0,
      held: (id) => leases.holds(id),
      resolving: leases.resolving(),
      now: this.#o.now(),
      graceMs,
    };
  }

  /** Whether `u` is still free of builds (checked again in the removal's synchronous stretch). */
  #free(u: GcUnit): boolean {
    const { leases } = this.#o;
    if (u.kind === 'template' && leases.resolving()) return false;
    return ![u.templateId, u.snapshotId].some((id) => id !== null && leases.holds(id));
  }

  async #collect(o: CollectOpts & { graceMs: number }): Promise<TemplateGcView> {
    const { svc, store, log, now } = this.#o;
    const plan = planCollection(this.#world(o.graceMs));
    const out: TemplateGcView = {
      dryRun: o.dryRun === true,
      graceS: o.graceMs / 1000,
      removed: [],
      kept: plan.kept.map((k) => view(k, k.reason)),
      freedBytes: 0,
    };
    if (o.dryRun) {
      out.removed = plan.remove.map((u) => view(u, null));
      out.freedBytes = plan.remove.reduce((n, u) => n + u.bytes, 0);
      return out;
    }
    // What stands on something now was used now: its grace starts again when that ends.
    store.touchSnapshots(plan.inUse, new Date(now()).toISOString());
    for (const u of plan.remove) {
      try {
        const r = await svc.removeUnused(u, () => this.#free(u), { opId: o.opId });
        if (r === 'kept') out.kept.push(view(u, 'it came into use meanwhile'));
        else {
          out.removed.push(view(u, null));
          out.freedBytes += u.bytes;
        }
      } catch (e) {
        const err = asKilnError(e).message;
        log.warn({ opId: o.opId, ...u, err }, 'removing an unused template layer failed');
        out.kept.push(view(u, `its removal failed: ${err}`));
      }
    }
    if (out.removed.length)
      log.info(
        { opId: o.opId, removed: out.removed.map((r) => r.name ?? r.snapshotId), bytes: out.freedBytes },
        'template garbage collection',
      );
    return out;
  }

  /** Starts the background pass every `everyMs` (0: never; passes on demand still run). */
  start(everyMs: number): void {
    if (everyMs > 0 && !this.#timer) this.#timer = every(this.#o.log, everyMs, () => this.collect());
  }

  /** Stops the background pass and waits for a pass in progress. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#pass;
  }
}
