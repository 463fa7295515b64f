import { readFile, readdir, lstat } from 'node:fs/promises';
import { join } from 'node:path';
import type { DashHost } from '../../core/dashboard-types.ts';
import type { SandboxService } from '../sandbox-service.ts';

/** What the dashboard's host page shows. */
export type HostUsage = DashHost;

/** Allocated bytes under `path` (a bounded walk; what cannot be read counts nothing). */
export async function duBytes(path: string, budget = { entries: 100_000 }): Promise<number> {
  let st;
  try {
    st = await lstat(path);
  } catch {
    return 0;
  }
  if (--budget.entries < 0) return 0;
  let n = st.blocks * 512;
  if (st.isDirectory()) {
    const names = await readdir(path).catch(() => [] as string[]);
    for (const name of names) n += await duBytes(join(path, name), budget);
  }
  return n;
}

/** MemTotal and MemAvailable of /proc/meminfo text (MiB). */
export function parseMeminfo(text: string): { totalMiB: number; availableMiB: number } {
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(text)?.[1] ?? 0);
  return { totalMiB: Math.round(kb('MemTotal') / 1024), availableMiB: Math.round(kb('MemAvailable') / 1024) };
}

/** Disk figures are walked at most this often (a walk of big snapshot trees is not free). */
const DISK_EVERY_MS = 30_000;

/**
 * The host's figures for the dashboard: version, accelerator, memory admitted / used / free,
 * sandboxes by state, disk used by images, templates, snapshots and VM overlays.
 */
export class HostUsageReader {
  readonly #o: { svc: SandboxService; version: string; stateDir: string; cacheDir: string };
  #disk: { at: number; value: HostUsage['disk'] } | undefined;
  #walking: Promise<HostUsage['disk']> | undefined;

  constructor(o: { svc: SandboxService; version: string; stateDir: string; cacheDir: string }) {
    this.#o = o;
  }

  async #diskUsage(): Promise<HostUsage['disk']> {
    const now = Date.now();
    if (this.#disk && now - this.#disk.at < DISK_EVERY_MS) return this.#disk.value;
    this.#walking ??= (async () => {
      const snapDir = join(this.#o.stateDir, 'data', 'snapshots');
      let templates = 0;
      let snapshots = 0;
      for (const s of this.#o.svc.listSnapshots()) {
        const b = await duBytes(join(snapDir, s.id));
        if (s.kind === 'template') templates += b;
        else snapshots += b;
      }
      const value = {
        images: await duBytes(join(this.#o.cacheDir, 'images')),
        templates,
        snapshots,
        overlays: await duBytes(join(this.#o.stateDir, 'vms')),
      };
      this.#disk = { at: Date.now(), value };
      return value;
    })().finally(() => {
      this.#walking = undefined;
    });
    return this.#walking;
  }

  async read(): Promise<HostUsage> {
    const mem = parseMeminfo(await readFile('/proc/meminfo', 'utf8').catch(() => ''));
    const commit = this.#o.svc.memoryCommitment();
    const sandboxes: HostUsage['sandboxes'] = {};
    const live = this.#o.svc.list(
      { states: ['creating', 'running', 'pausing', 'paused', 'resuming', 'killing'] },
      { limit: 1000 },
    );
    for (const s of live.items) sandboxes[s.state] = (sandboxes[s.state] ?? 0) + 1;
    return {
      version: this.#o.version,
      accel: this.#o.svc.accel() ?? null,
      memory: {
        admittedMiB: commit.committedMiB,
        limitMiB: commit.limitMiB,
        totalMiB: mem.totalMiB,
        usedMiB: mem.totalMiB - mem.availableMiB,
        freeMiB: mem.availableMiB,
      },
      sandboxes,
      disk: await this.#diskUsage(),
      at: new Date().toISOString(),
    };
  }
}
