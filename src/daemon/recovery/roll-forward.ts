import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { OperationRecord } from '../../core/domain.ts';
import { completeSnapshot } from '../sandbox/complete.ts';
import type { ServiceContext } from '../sandbox/context.ts';
import { killVm, stopVm } from '../sandbox/vm.ts';
import { DISK_LAYER, META_FILE, type SnapshotMeta } from '../sandbox/snapshot-files.ts';

/**
 * Finishes a snapshot (or pause) interrupted after its point of no return, by a crash (at
 * start-up) or by a failure of its own completion (right away): the source runs again (or, for
 * a pause, stays stopped) and the snapshot is completed from its directory by the same
 * completion step a snapshot that was not interrupted takes. False when there is nothing to
 * finish from, or finishing failed (the files and the open op are then kept for the next start).
 */
export async function rollForwardSnapshot(sc: ServiceContext, op: OperationRecord): Promise<boolean> {
  const dirStep = op.steps.find((st) => st.name === 'snapshot dir');
  if (dirStep?.undo.action !== 'remove-path') return false;
  let meta: SnapshotMeta;
  try {
    meta = JSON.parse(await readFile(join(dirStep.undo.path, META_FILE), 'utf8')) as SnapshotMeta;
  } catch {
    return false;
  }
  const layer = join(dirStep.undo.path, DISK_LAYER);
  try {
    const vm = await sc.driver.status(op.subject).then(
      (i) => i.state,
      () => 'gone' as const,
    );
    if (meta.kind === 'pause') await finishStop(sc, op.subject, layer, vm !== 'gone');
    else if (vm === 'paused') await finishFreeze(sc, op.subject, layer);
    if (!existsSync(layer)) return false;
    const snap = await completeSnapshot(sc, meta);
    const s = sc.store.getSandbox(op.subject);
    if (s.state !== 'dead') {
      sc.store.updateSandbox(op.subject, {
        sourceSnapshotId: snap.id,
        ...(meta.kind === 'pause' && s.state === 'pausing' ? { state: 'paused' as const } : {}),
      });
    }
    sc.log.info({ opId: op.id, snapshotId: snap.id }, 'interrupted snapshot finished at start-up');
    return true;
  } catch (e) {
    sc.log.warn({ err: e, opId: op.id }, 'finishing an interrupted snapshot failed');
    return false;
  }
}

/** A pause's crossing, finished: the VM stopped keeping its overlay as the layer, and gone. */
async function finishStop(sc: ServiceContext, id: string, layer: string, vmExists: boolean): Promise<void> {
  // Stopping keeps the overlay as the layer; it picks up a stop that was cut short.
  if (!existsSync(layer) && vmExists) await stopVm(sc, id, { keepOverlayAs: layer });
  // The layer is kept only once QEMU has exited, but a crash before the stop removed the
  // VM's directory leaves it behind, and a resume would find the VM "already exists".
  if (existsSync(layer)) await killVm(sc, id);
}

/** A snapshot's crossing, finished: the disk frozen (freezeDisk finishes a cut-short freeze or sees it done), the source running. */
async function finishFreeze(sc: ServiceContext, id: string, layer: string): Promise<void> {
  await sc.driver.freezeDisk(id, layer);
  await sc.driver.resume(id);
}
