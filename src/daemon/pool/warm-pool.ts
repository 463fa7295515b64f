import type { PoolVmRecord, SnapshotRecord, TemplateRecord } from '../../core/domain.ts';
import type { WarmPoolView } from '../../core/api-types.ts';
import { KilnError } from '../../core/errors.ts';
import type { ServiceContext, WarmPoolHooks } from '../sandbox/context.ts';
import { templateReady } from '../sandbox/queries.ts';
import { killVm } from '../sandbox/vm.ts';
import { fillOne } from './fill.ts';

/** How the pool is sized when no size is set for a template through the API. */
export interface WarmPoolOpts {
  /** The template `KILN_WARM_POOL` sizes (kiln's default, `base`). */
  defaultTemplate: string;
  /** KILN_WARM_POOL (0: no pool unless a template has a size set). */
  defaultSize: number;
  /** How long after a take the refill starts (default REFILL_DELAY_MS). */
  refillDelayMs?: number;
}

/** How long after a take the pool starts refilling (ms). */
export const REFILL_DELAY_MS = 2000;

/** One template's pool: the size it should have and what it holds (the API's view). */
export type WarmPoolStatus = WarmPoolView;

const refusedForRoom = (e: unknown): boolean =>
  e instanceof KilnError && (e.code === 'capacity' || e.code === 'no_space');

/**
 * The warm pool (issue 15): per template, N VMs restored from its snapshot and waited for, so
 * that a create only runs /init. Members live in the store's `pool_vms`, not among sandboxes:
 * no list or count shows them, but memory and disk admission count them (admission.ts) and
 * snapshot collection sees them standing on their template's layer.
 *
 * - Refill: one pass at a time (`kick` asks for another after it), one member at a time, in the
 *   background; a member that admission refuses leaves the pool short until the next pass.
 * - Take: atomic in the store (two creates never get the same member); see create.ts.
 * - Drain: members of a template that is gone, rebuilt (another snapshot) or sized down, and
 *   members whose VM stopped, at every pass; a whole template's at its deletion (`drain`);
 *   one member whenever admission refuses a real create or resume (`evictOne`).
 * - Crash: a fill is journalled (fill.ts); start-up re-adopts ready members whose VM runs and
 *   removes the others (recovery/adopt-pool.ts).
 */
export class WarmPool implements WarmPoolHooks {
  readonly #sc: ServiceContext;
  readonly #o: WarmPoolOpts;
  #pass: Promise<void> | undefined;
  #again = false;
  /** Until the background starts, only explicit passes (refillOnce) fill. */
  #closed = true;

  constructor(sc: ServiceContext, o: WarmPoolOpts) {
    this.#sc = sc;
    this.#o = o;
  }

  /** The size template `t` is kept at. */
  sizeOf(t: TemplateRecord, sizes = this.#sc.store.poolSizes()): number {
    return sizes.get(t.id) ?? (t.name === this.#o.defaultTemplate ? this.#o.defaultSize : 0);
  }

  /** Every template with a pool size or members, by name. */
  status(): WarmPoolStatus[] {
    const sizes = this.#sc.store.poolSizes();
    const members = this.#sc.store.listPoolVms();
    return this.#sc.store
      .listTemplates()
      .map((t) => {
        const mine = members.filter((m) => m.templateId === t.id);
        return {
          templateId: t.id,
          template: t.name,
          size: this.sizeOf(t, sizes),
          sizeSet: sizes.has(t.id),
          ready: mine.filter((m) => m.state === 'ready').length,
          starting: mine.filter((m) => m.state === 'starting').length,
        };
      })
      .filter((s) => s.size > 0 || s.ready + s.starting > 0)
      .sort((a, b) => a.template.localeCompare(b.template));
  }

  /**
   * Takes a ready member restored from `snap` (the template's current snapshot), and refills a
   * little later: a restore right away would compete for the CPU with the /init and the first
   * commands of the sandbox it just served (under TCG a restore keeps a core busy for ~1 s).
   */
  take(snap: SnapshotRecord): PoolVmRecord | undefined {
    const m = this.#sc.store.takePoolVm(snap.id);
    if (m && !this.#closed)
      setTimeout(() => {
        this.kick();
      }, this.#o.refillDelayMs ?? REFILL_DELAY_MS).unref();
    return m;
  }

  /**
   * Kills one member to make room for a create or resume that admission refused (ready ones
   * first, the newest first); false when the pool is empty.
   */
  async evictOne(): Promise<boolean> {
    const all = this.#sc.store.listPoolVms();
    const order = [...all.filter((m) => m.state === 'ready'), ...all.filter((m) => m.state !== 'ready')];
    for (const m of order.reverse()) {
      if (await this.#remove(m, 'memory pressure')) return true;
    }
    return false;
  }

  /** Asks for a refill pass in the background (another one after the current, if one runs). */
  kick(): void {
    if (this.#closed) return;
    if (this.#pass) {
      this.#again = true;
      return;
    }
    this.#pass = this.#loop().finally(() => (this.#pass = undefined));
  }

  /** Resolves when no refill pass runs (tests, shutdown). */
  async settled(): Promise<void> {
    while (this.#pass) await this.#pass;
  }

  /** No more refill passes (the background stopped); a fill in progress finishes (`settled`). */
  stop(): void {
    this.#closed = true;
  }

  /** Refill passes may run again (the background started). */
  open(): void {
    this.#closed = false;
  }

  /** Removes every member of template `templateId` (its deletion); resolves with their ids. */
  async drain(templateId: string, why = 'template deleted'): Promise<string[]> {
    const out: string[] = [];
    const sweep = async (): Promise<void> => {
      for (const m of this.#sc.store.listPoolVms())
        if (m.templateId === templateId && (await this.#remove(m, why))) out.push(m.id);
    };
    await sweep();
    // A fill of it in progress ends (it fails once its record is gone, or adds a member the
    // second sweep removes); the pass makes no other (the template changed).
    await this.settled();
    await sweep();
    return out;
  }

  async #loop(): Promise<void> {
    for (;;) {
      this.#again = false;
      try {
        await this.refillOnce();
      } catch (e) {
        this.#sc.log.warn({ err: e }, 'warm pool refill failed; retried on the next pass');
      }
      if (!this.#kickedMeanwhile()) return;
    }
  }

  /** A kick came while the pass ran (and the background still runs): another pass. */
  #kickedMeanwhile(): boolean {
    return this.#again && !this.#closed;
  }

  /**
   * One pass: drains what should not be in the pool, then fills every template up to its size,
   * one member at a time, until admission refuses or a fill fails (the next pass retries).
   * Stops between fills once the background stops, unless `force`d (an explicit pass).
   */
  async refillOnce(force = false): Promise<void> {
    const sizes = this.#sc.store.poolSizes();
    const templates = new Map(this.#sc.store.listTemplates().map((t) => [t.id, t]));
    await this.#drainStale(templates, sizes);
    for (const t of templates.values()) {
      if (this.sizeOf(t, sizes) === 0 || !t.snapshotId || !templateReady(this.#sc, t)) continue;
      const snap = this.#sc.store.getSnapshot(t.snapshotId);
      while ((force || !this.#closed) && this.#wants(t)) {
        try {
          const m = await fillOne(this.#sc, t, snap);
          this.#sc.log.info({ template: t.name, vmId: m.id }, 'warm pool member ready');
        } catch (e) {
          if (refusedForRoom(e)) {
            this.#sc.log.debug({ template: t.name, err: e }, 'warm pool stays short: no room');
            return;
          }
          throw e;
        }
      }
    }
  }

  /**
   * Whether template `t` (as the pass read it) still wants another member: still there with the
   * same snapshot (not deleted or rebuilt meanwhile) and fewer members than its size.
   */
  #wants(t: TemplateRecord): boolean {
    const now = this.#sc.store.listTemplates().find((x) => x.id === t.id);
    if (!now || now.snapshotId !== t.snapshotId) return false;
    const have = this.#sc.store
      .listPoolVms()
      .filter((m) => m.templateId === t.id && m.snapshotId === t.snapshotId).length;
    return have < this.sizeOf(now);
  }

  /** Members of gone or rebuilt templates, beyond their size, or whose VM stopped. */
  async #drainStale(templates: Map<string, TemplateRecord>, sizes: Map<string, number>): Promise<void> {
    const kept = new Map<string, number>();
    for (const m of this.#sc.store.listPoolVms()) {
      if (m.state !== 'ready') continue;
      const t = templates.get(m.templateId);
      const n = (kept.get(m.templateId) ?? 0) + 1;
      let why: string | undefined;
      if (!t || t.snapshotId !== m.snapshotId) why = 'template rebuilt or deleted';
      else if (n > this.sizeOf(t, sizes)) why = 'pool sized down';
      else if (!(await this.#vmRuns(m.id))) why = 'VM stopped';
      if (why) await this.#remove(m, why);
      else kept.set(m.templateId, n);
    }
  }

  async #vmRuns(id: string): Promise<boolean> {
    return this.#sc.driver.status(id).then(
      (i) => i.state !== 'stopped',
      (e: unknown) => !(e instanceof KilnError && e.code === 'not_found'),
    );
  }

  /**
   * Removes member `m`: its record first (whoever deletes it owns it: a take, another removal),
   * then its VM and network slot. A crash in between leaves a VM no record explains, which
   * start-up kills. False when it was gone already.
   */
  async #remove(m: PoolVmRecord, why: string): Promise<boolean> {
    if (!this.#sc.store.deletePoolVm(m.id)) return false;
    await killVm(this.#sc, m.id).catch((e: unknown) => {
      this.#sc.log.warn({ err: e, vmId: m.id }, 'could not kill a warm pool VM; start-up kills it');
    });
    this.#sc.log.info({ vmId: m.id, why }, 'warm pool member removed');
    return true;
  }
}
