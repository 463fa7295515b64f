import { constants, existsSync, readdirSync, statSync } from 'node:fs';
import { copyFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { KilnError, invalidArgument } from '../../core/errors.ts';
import { run } from '../../core/exec.ts';
import type { DiskLayers, OpOpts } from '../driver.ts';
import { OverlayCache } from './overlay-cache.ts';
import { diskVirtualSize, overlayWorstCaseBytes } from './qcow2.ts';
import type { QmpClient } from './qmp.ts';

/**
 * Disk layers as qcow2 images, each naming the one below as its backing file (the bottom one
 * is a raw rootfs); every operation on them runs qemu-img.
 */
export class QemuDiskLayers implements DiskLayers {
  readonly #runDir: string;
  readonly #qemuImg: string;
  readonly #overlays = new OverlayCache();

  constructor(o: { runDir: string; qemuImgBinary?: string }) {
    this.#runDir = o.runDir;
    this.#qemuImg = o.qemuImgBinary ?? 'qemu-img';
  }

  virtualSize(layer: string): number {
    return diskVirtualSize(layer);
  }

  maxWritableBytes(virtualBytes: number): number {
    return overlayWorstCaseBytes(virtualBytes);
  }

  writtenBytes(id: string): number {
    const dir = join(this.#runDir, id);
    let overlays: string[];
    try {
      overlays = readdirSync(dir).filter((f) => /^overlay(-\d+)?\.qcow2$/.test(f));
    } catch {
      return 0;
    }
    return overlays.reduce((n, f) => {
      try {
        return n + statSync(join(dir, f)).blocks * 512;
      } catch {
        return n;
      }
    }, 0);
  }

  /**
   * A copy of `layer` rebased onto `base` in qemu-img's safe mode, which writes into it every
   * cluster where the old chain and `base` differ. (`qemu-img convert -B base` would not do:
   * it copies only what the top layer itself holds and so drops the layers in between.)
   */
  async flatten(layer: string, base: string, out: string, opts: OpOpts = {}): Promise<void> {
    await copyFile(layer, out, constants.COPYFILE_EXCL);
    await this.#img(['rebase', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', out], opts);
  }

  async exportStandalone(layer: string, out: string, opts: OpOpts = {}): Promise<void> {
    await this.#img(['convert', '-q', '-O', 'qcow2', layer, out], opts);
  }

  async verifyImported(path: string, opts: OpOpts = {}): Promise<void> {
    const info = JSON.parse(
      (
        await run(this.#qemuImg, ['info', '--output=json', path], {
          failCode: 'invalid_argument',
          signal: opts.signal,
        })
      ).stdout,
    ) as {
      format?: string;
      'backing-filename'?: string;
      'format-specific'?: { data?: { 'data-file'?: string } };
    };
    if (info.format !== 'qcow2' || info['backing-filename'] || info['format-specific']?.data?.['data-file'])
      throw invalidArgument(
        'archive',
        `${basename(path)} must be a standalone qcow2 image (no backing or data file); it is ${info.format ?? 'unknown'}${info['backing-filename'] ? ` backed by ${info['backing-filename']}` : ''}`,
      );
  }

  /**
   * A new, empty qcow2 overlay over `backing`: qemu-img's bytes for the first overlay of a
   * backing, a copy of them for the next (OverlayCache).
   */
  async createOverlay(
    backing: { path: string; format: 'raw' | 'qcow2' },
    overlay: string,
    opts: OpOpts = {},
  ) {
    const key = await this.#overlays.keyOf(backing);
    if (key && (await this.#overlays.write(key, overlay))) return;
    await this.#img(['create', '-q', '-f', 'qcow2', '-b', backing.path, '-F', backing.format, overlay], opts);
    // The key from before the run: a backing changed meanwhile is not cached under it.
    if (key && key === (await this.#overlays.keyOf(backing))) await this.#overlays.remember(key, overlay);
  }

  /** The backing file named in a qcow2 header (read while QEMU holds the image: -U). */
  async backingOf(image: string): Promise<string | undefined> {
    const r = await run(this.#qemuImg, ['info', '-U', '--output=json', image], { failCode: 'driver_error' });
    return (JSON.parse(r.stdout) as { 'backing-filename'?: string })['backing-filename'];
  }

  async #img(args: string[], opts: OpOpts): Promise<void> {
    await run(this.#qemuImg, args, { failCode: 'driver_error', signal: opts.signal });
  }
}

/** The file the VM's root disk writes to now (QMP query-block). */
async function activeImage(q: QmpClient): Promise<string> {
  const blocks =
    await q.execute<{ device: string; inserted?: { image: { filename: string } } }[]>('query-block');
  const file = blocks.find((b) => b.device === 'root')?.inserted?.image.filename;
  if (!file) throw new KilnError('driver_error', 'QEMU reports no root disk');
  return file;
}

export interface FreezeTarget {
  id: string;
  /** The VM's directory. */
  dir: string;
  /** The overlay's name in `dir` the VM writes to now (per its record). */
  current: string;
  layerPath: string;
  /** Records that the VM now writes to overlay `name` (in `dir`). */
  record: (name: string) => Promise<void>;
}

/**
 * Freezes a paused VM's overlay into `layerPath` and switches the VM to a new overlay over it
 * (QMP blockdev-snapshot-sync, mode existing). Finishes a freeze a crash interrupted.
 */
export async function freezeOverlay(
  layers: QemuDiskLayers,
  q: QmpClient,
  t: FreezeTarget,
  opts: OpOpts,
): Promise<void> {
  const cur = join(t.dir, t.current);
  const n = Number(/^overlay-(\d+)\.qcow2$/.exec(t.current)?.[1] ?? 0) + 1;
  const nextName = `overlay-${n}.qcow2`;
  const next = join(t.dir, nextName);
  // Finishing a freeze a crash interrupted (same VM, same layer): see how far it got.
  const active = await activeImage(q);
  if (existsSync(t.layerPath)) {
    if (active !== cur && dirname(active) === t.dir) return t.record(basename(active)); // only the record was missing
    // Done and recorded: the overlay the VM writes to sits on this layer.
    if (existsSync(cur) && (await layers.backingOf(cur)) === t.layerPath) return;
    if (existsSync(cur)) throw new KilnError('already_exists', `${t.layerPath} already exists`);
    // The overlay was moved to the layer but the VM was not switched yet: go on from there.
  } else {
    // QEMU keeps the old overlay open: moving its name does not disturb the VM.
    await rename(cur, t.layerPath).catch((e: unknown) => {
      throw new KilnError(
        'driver_error',
        `cannot move VM ${t.id}'s overlay to ${t.layerPath}: ${(e as Error).message} (it must be on the same filesystem as the run dir)`,
        { cause: e },
      );
    });
  }
  try {
    await rm(next, { force: true });
    await layers.createOverlay({ path: t.layerPath, format: 'qcow2' }, next, opts);
    // `existing`: QEMU opens our overlay, whose header names the layer's final path as its backing.
    await q.execute(
      'blockdev-snapshot-sync',
      { device: 'root', 'snapshot-file': next, format: 'qcow2', mode: 'existing' },
      { timeoutMs: opts.timeoutMs ?? 30_000 },
    );
  } catch (e) {
    await rm(next, { force: true });
    await rename(t.layerPath, cur);
    throw e;
  }
  await t.record(nextName);
}
