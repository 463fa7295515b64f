import { freeBytes } from '../core/disk-space.ts';
import { KilnError, NO_SPACE_ADVICE } from '../core/errors.ts';
import type { SnapshotRecord } from '../core/domain.ts';
import type { DiskLayers } from '../vmm/driver.ts';
import { diskLayer, type ServiceContext } from './sandbox/context.ts';
import { LIVE } from './sandbox/types.ts';

const MiB = 2 ** 20;

export interface DiskAdmissionOpts {
  /** The directory whose filesystem holds VM overlays, snapshots and the database (the state dir). */
  stateDir: string;
  /** The driver's disk layers: guest disk sizes, worst-case growth, what each VM wrote. */
  layers: Pick<DiskLayers, 'virtualSize' | 'maxWritableBytes' | 'writtenBytes'>;
  /** Free space kept for the database, logs and snapshots, whatever sandboxes may take (MiB). */
  reserveMiB: number;
  /**
   * The worst-case growth of sandbox disks is divided by this (1 = every sandbox may fill its
   * whole disk; 4 = sandboxes are expected to use a quarter of theirs at most). Like memory's
   * overcommit ratio.
   */
  overcommitRatio: number;
  /** Free bytes available to kiln on the filesystem of `dir` (statfs f_bavail x f_bsize). */
  freeBytes?: (dir: string) => number;
}

/** A live sandbox as admission sees it: its id and the disk layer its overlay sits on. */
export interface LiveDisk {
  id: string;
  /** Absolute path of the layer the sandbox's overlay sits on (its size is the guest disk's size). */
  layer: string;
}

export const DEFAULT_DISK_RESERVE_MIB = 256;

/**
 * Disk admission: a sandbox's disk is a writable layer (QEMU: a qcow2 overlay) over its source
 * snapshot's layers, so it can grow on the host by at most the guest disk's virtual size (plus
 * the driver's metadata, `DiskLayers.maxWritableBytes`): that is
 * the per-sandbox disk limit. A create (or resume) is admitted only when the state dir's free
 * space covers, after dividing by the overcommit ratio, the new sandbox's worst-case growth plus
 * what running sandboxes may still write (their worst case minus what their overlays already
 * hold), plus the reserve. Otherwise `no_space`, saying how much is missing and what to do.
 */
export class DiskAdmission {
  readonly #o: DiskAdmissionOpts;
  readonly #freeBytes: (dir: string) => number;
  /** Layer path -> virtual size; snapshot layers are immutable. */
  readonly #sizes = new Map<string, number>();

  constructor(o: DiskAdmissionOpts) {
    if (!(o.overcommitRatio >= 1))
      throw new KilnError('invalid_argument', `disk overcommit ratio must be >= 1, got ${o.overcommitRatio}`);
    if (!(o.reserveMiB >= 0))
      throw new KilnError('invalid_argument', `disk reserve must be >= 0 MiB, got ${o.reserveMiB}`);
    this.#o = o;
    this.#freeBytes = o.freeBytes ?? freeBytes;
  }

  /** The guest disk size (virtual size, bytes) of a sandbox whose overlay sits on `layer`. */
  diskBytes(layer: string): number {
    let v = this.#sizes.get(layer);
    if (v === undefined) {
      v = this.#o.layers.virtualSize(layer);
      this.#sizes.set(layer, v);
    }
    return v;
  }

  /** What a running sandbox may still write to its overlay (bytes): its worst case minus its use. */
  remainingBytes(s: LiveDisk): number {
    // No writable layer yet (being created) or none any more: its whole worst case counts.
    const used = this.#o.layers.writtenBytes(s.id);
    return Math.max(0, this.#o.layers.maxWritableBytes(this.diskBytes(s.layer)) - used);
  }

  /**
   * Admits a new sandbox whose overlay will sit on `layer`, next to the `live` ones (those that
   * have or are getting a VM; paused sandboxes write nothing). `no_space` when it does not fit.
   */
  admit(layer: string, live: readonly LiveDisk[]): void {
    const o = this.#o;
    const mine = this.#o.layers.maxWritableBytes(this.diskBytes(layer));
    let others = 0;
    for (const s of live) {
      try {
        others += this.remainingBytes(s);
      } catch {
        // A layer that vanished (its sandbox is ending): nothing more will be written there.
      }
    }
    const need = (mine + others) / o.overcommitRatio + o.reserveMiB * MiB;
    const free = this.#freeBytes(o.stateDir);
    if (free < need) {
      const mb = (b: number): number => Math.ceil(b / MiB);
      throw new KilnError(
        'no_space',
        `not enough free disk space for a new sandbox: ${mb(free)} MiB free in ${o.stateDir}, ${mb(need)} MiB needed ` +
          `(its ${mb(mine)} MiB disk + ${mb(others)} MiB that ${live.length} live sandboxes may still write` +
          `${o.overcommitRatio === 1 ? '' : `, divided by the overcommit ratio ${o.overcommitRatio}`}, + ${o.reserveMiB} MiB reserve); ${NO_SPACE_ADVICE}`,
        { details: { freeMiB: mb(free), neededMiB: mb(need) } },
      );
    }
  }
}

/** Memory committed to live sandboxes (paused ones included) and the admission limit (MiB). */
export function memoryCommitment(sc: ServiceContext): {
  committedMiB: number;
  limitMiB: number | null;
  hostMiB: number | null;
} {
  const live = sc.store.listSandboxes({ states: [...LIVE] }, { limit: 1000 }).items;
  const cap = sc.capacity;
  return {
    committedMiB: live.reduce((n, s) => n + s.memoryMiB, 0),
    limitMiB: cap ? Math.floor(cap.hostMemoryMiB * cap.overcommitRatio) : null,
    hostMiB: cap ? cap.hostMemoryMiB : null,
  };
}

/**
 * The admission policy of a create, restore, fork or resume whose VM restores `source` with
 * `memoryMiB` of RAM: the disk check above (when configured) and the memory check (live
 * sandboxes' memory + warm pool members' + this one <= host MiB x overcommit ratio). Warm pool
 * members count like live sandboxes (their VMs run), though no list shows them.
 * `no_space` or `capacity`.
 */
export function admit(sc: ServiceContext, memoryMiB: number, source: SnapshotRecord): void {
  const cap = sc.capacity;
  const live = sc.store.listSandboxes({ states: [...LIVE] }, { limit: 1000 }).items;
  const pool = sc.store.listPoolVms();
  const layerOf = (id: string, snapshotId: string): LiveDisk[] => {
    try {
      return [{ id, layer: diskLayer(sc, snapshotId) }];
    } catch {
      return [];
    }
  };
  sc.disk?.admit(diskLayer(sc, source), [
    // Paused ones have no VM: nothing written.
    ...live.flatMap((s) =>
      s.state === 'paused' || !s.sourceSnapshotId ? [] : layerOf(s.id, s.sourceSnapshotId),
    ),
    ...pool.flatMap((m) => layerOf(m.id, m.snapshotId)),
  ]);
  if (!cap) return;
  const inPool = pool.reduce((n, m) => n + m.memoryMiB, 0);
  const used = live.reduce((n, s) => n + s.memoryMiB, 0) + inPool;
  const limit = Math.floor(cap.hostMemoryMiB * cap.overcommitRatio);
  if (used + memoryMiB > limit) {
    const held = pool.length ? ` (${inPool} MiB of it held by ${pool.length} warm pool VMs)` : '';
    throw new KilnError(
      'capacity',
      `not enough host memory: ${used} MiB committed to ${live.length} sandboxes${held} + ${memoryMiB} MiB would pass the limit of ${limit} MiB (${cap.hostMemoryMiB} MiB x ${cap.overcommitRatio}); kill a sandbox or raise the overcommit ratio`,
    );
  }
}

/**
 * `admit` for a create or resume a user asked for: when admission refuses it (memory or disk)
 * and the warm pool holds VMs, one is killed to make room and admission asked again, until it
 * admits or the pool is empty (then the refusal stands).
 */
export async function admitMakingRoom(
  sc: ServiceContext,
  memoryMiB: number,
  source: SnapshotRecord,
): Promise<void> {
  for (;;) {
    try {
      admit(sc, memoryMiB, source);
      return;
    } catch (e) {
      const room = e instanceof KilnError && (e.code === 'capacity' || e.code === 'no_space');
      if (!room || !sc.pool || !(await sc.pool.evictOne())) throw e;
      sc.log.info({ refused: e.code }, 'a warm pool VM was killed to make room');
    }
  }
}
