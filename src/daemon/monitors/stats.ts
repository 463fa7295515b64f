import { stat } from 'node:fs/promises';
import type { SandboxRecord } from '../../core/domain.ts';
import { KilnError } from '../../core/errors.ts';
import { CLOCK_TICKS_PER_S, procCpuRss, procPss } from '../../core/proc.ts';
import type { ServiceContext } from '../sandbox/context.ts';
import { getSandbox } from '../sandbox/queries.ts';
import { STATS_EVERY_MS, type SandboxStats } from '../sandbox/types.ts';

/** Samples kept per sandbox: one hour of the background's 5-s samples (the dashboard's charts). */
export const STATS_HISTORY = Math.ceil(3_600_000 / STATS_EVERY_MS);

/**
 * How old a sandbox's PSS may be in a background sample (the API's `stats` reads it afresh once
 * it is STATS_EVERY_MS old). CPU and RSS are cheap to read; PSS is not (the kernel walks the
 * VM's page tables, some 3 ms each under TCG): read every 5 s it was most of an idle kilnd's CPU,
 * and it blocked the event loop for that long per sandbox.
 */
export const PSS_EVERY_MS = 30_000;

/** Where the sampler reads a process's usage (tests give their own). */
export interface ProcReader {
  cpuRss: typeof procCpuRss;
  pss: typeof procPss;
}

/**
 * The /proc statistics of running sandboxes: CPU (% of one core since the previous sample, or
 * since start on the first), memory (RSS and PSS of its QEMU process) and disk (bytes its
 * overlay holds). The background samples every sandbox every STATS_EVERY_MS.
 */
export class StatsSampler {
  readonly #sc: ServiceContext;
  readonly #samples = new Map<string, { ticks: number; at: number }>();
  readonly #latest = new Map<string, SandboxStats>();
  /** The background's samples per sandbox, oldest first, at most STATS_HISTORY (a ring). */
  readonly #history = new Map<string, SandboxStats[]>();
  /** The last PSS read per sandbox: of which QEMU process, bytes, when. */
  readonly #pss = new Map<string, { pid: number; bytes: number; at: number }>();
  readonly #proc: ProcReader;
  #accel: 'kvm' | 'tcg' | undefined;

  constructor(sc: ServiceContext, proc: ProcReader = { cpuRss: procCpuRss, pss: procPss }) {
    this.#sc = sc;
    this.#proc = proc;
  }

  /**
   * What the API answers: the background's recent sample while its PSS is as fresh as a sample
   * (STATS_EVERY_MS; the background reads PSS only every PSS_EVERY_MS), else a fresh sample: a
   * user who just freed memory sees it within seconds.
   */
  async stats(id: string): Promise<SandboxStats> {
    const latest = this.#latest.get(id);
    const now = this.#sc.now();
    const pssAt = this.#pss.get(id)?.at ?? -Infinity;
    if (
      latest &&
      now - Date.parse(latest.at) < STATS_EVERY_MS * 2 &&
      now - pssAt < STATS_EVERY_MS &&
      getSandbox(this.#sc, id).state === 'running'
    )
      return latest;
    return this.#sample(id, STATS_EVERY_MS);
  }

  /**
   * The background's samples of a sandbox over the last hour, oldest first (empty when it has
   * none). Kept while the sandbox is live (a paused one keeps its history); dropped when it ends.
   */
  history(id: string): SandboxStats[] {
    return [...(this.#history.get(id) ?? [])];
  }

  /** The accelerator the last sampled VM runs under (undefined before any VM was sampled). */
  accel(): 'kvm' | 'tcg' | undefined {
    return this.#accel;
  }

  /** Samples every running sandbox (and forgets the others; history only once they ended). */
  async sampleAll(): Promise<void> {
    const live = this.#sc.store.listSandboxes({ states: ['running'] }, { limit: 1000 }).items;
    const ids = new Set(live.map((s) => s.id));
    for (const id of this.#latest.keys()) if (!ids.has(id)) this.#latest.delete(id);
    for (const id of this.#pss.keys()) if (!ids.has(id)) this.#pss.delete(id);
    if (this.#history.size > ids.size) {
      const kept = new Set(
        this.#sc.store
          .listSandboxes({ states: ['pausing', 'paused', 'resuming'] }, { limit: 1000 })
          .items.map((s) => s.id),
      );
      for (const id of this.#history.keys()) if (!ids.has(id) && !kept.has(id)) this.#history.delete(id);
    }
    for (const id of ids) {
      const s = await this.#sample(id, PSS_EVERY_MS).catch(() => undefined);
      if (!s) continue;
      const h = this.#history.get(id) ?? [];
      h.push(s);
      if (h.length > STATS_HISTORY) h.splice(0, h.length - STATS_HISTORY);
      this.#history.set(id, h);
    }
  }

  /** A sample now; its PSS is read again when the last read is `pssMaxAgeMs` old. */
  async #sample(id: string, pssMaxAgeMs: number): Promise<SandboxStats> {
    const s: SandboxRecord = getSandbox(this.#sc, id);
    if (s.state !== 'running')
      throw new KilnError('invalid_state', `sandbox ${id} is ${s.state}; stats need a running VM`);
    const info = await this.#sc.driver.status(id);
    this.#accel = info.accel;
    const u = this.#proc.cpuRss(info.pid);
    if (!u || info.state === 'stopped')
      throw new KilnError('invalid_state', `sandbox ${id} has no running VM`);
    const t = this.#sc.now();
    const pss = this.#pssOf(id, info.pid, t, pssMaxAgeMs) ?? u.rssBytes;
    const prev = this.#samples.get(id) ?? { ticks: 0, at: Date.parse(info.startedAt) };
    this.#samples.set(id, { ticks: u.cpuTicks, at: t });
    const cpuPct =
      t > prev.at ? ((u.cpuTicks - prev.ticks) / CLOCK_TICKS_PER_S / ((t - prev.at) / 1000)) * 100 : 0;
    const disk = await stat(info.overlay).catch(() => undefined);
    const sample: SandboxStats = {
      sandboxId: id,
      cpuPct: Math.round(cpuPct * 100) / 100,
      rssBytes: u.rssBytes,
      pssBytes: pss,
      diskBytes: disk ? disk.blocks * 512 : 0,
      memoryMiB: s.memoryMiB,
      at: new Date(t).toISOString(),
    };
    this.#latest.set(id, sample);
    return sample;
  }

  /**
   * The sandbox's PSS: read again once the last read is `maxAgeMs` old or of another process
   * (undefined: unreadable).
   */
  #pssOf(id: string, pid: number, t: number, maxAgeMs: number): number | undefined {
    const last = this.#pss.get(id);
    // A resumed sandbox runs in a new QEMU: its memory is read afresh.
    if (last?.pid === pid && t - last.at < maxAgeMs) return last.bytes;
    const bytes = this.#proc.pss(pid);
    if (bytes === undefined) this.#pss.delete(id);
    else this.#pss.set(id, { pid, bytes, at: t });
    return bytes;
  }
}
