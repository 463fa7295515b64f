import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { SnapshotRecord } from '../../core/domain.ts';
import { KilnError } from '../../core/errors.ts';
import { artifact } from '../snapshot-archive.ts';
import { snapDir, type ServiceContext } from './context.ts';
import { MAX_DISK_CHAIN, type OpCtx } from './types.ts';

/**
 * Garbage collection of snapshot layers: deleting a snapshot, collecting the internal ones
 * (pause, fork) nothing depends on, and flattening disk chains that grew too long.
 */

/**
 * Deletes a snapshot and its files. Refused while a sandbox or another snapshot depends on its
 * layers (the store refuses), and for a template's own snapshot.
 */
export async function deleteSnapshot(
  sc: ServiceContext,
  snap: SnapshotRecord,
  ctx: OpCtx = {},
): Promise<void> {
  const owner = sc.store.listTemplates().find((t) => t.snapshotId === snap.id);
  if (owner)
    throw new KilnError(
      'invalid_state',
      `snapshot ${snap.id} is template "${owner.name}"'s; it goes with the template`,
    );
  await sc.locks.run(`snapshot:${snap.id}`, async () => {
    sc.store.deleteSnapshot(snap.id);
    // The record goes first: a crash before the files are gone leaves an orphan directory,
    // which start-up reconciliation removes.
    await rm(snapDir(sc, snap.id), { recursive: true, force: true });
    sc.log.info({ opId: ctx.opId, snapshotId: snap.id }, 'snapshot deleted');
  });
}

/** Removes pause and fork snapshots nothing depends on any more (their sandboxes ended or moved on). */
export async function collectInternalSnapshots(sc: ServiceContext): Promise<string[]> {
  const removed: string[] = [];
  for (let again = true; again;) {
    again = false;
    for (const snap of sc.store.listSnapshots()) {
      if (snap.kind !== 'pause' && snap.kind !== 'fork') continue;
      const deps = sc.store.snapshotDependents(snap.id);
      if (deps.snapshots.length || deps.sandboxes.length) continue;
      await deleteSnapshot(sc, snap).then(
        () => {
          removed.push(snap.id);
          again = true;
        },
        (e: unknown) => {
          sc.log.warn({ err: e, snapshotId: snap.id }, 'removing an unused snapshot failed');
        },
      );
    }
  }
  return removed;
}

/** The snapshots whose layers make `snap`'s disk, from itself down to its template's. */
function chain(sc: ServiceContext, snap: SnapshotRecord): SnapshotRecord[] {
  const out = [snap];
  for (let cur = snap; cur.parentId;) {
    cur = sc.store.getSnapshot(cur.parentId);
    out.push(cur);
  }
  return out;
}

/**
 * Flattens disk chains longer than MAX_DISK_CHAIN: the snapshot's disk is rewritten as one
 * layer over the chain's root (a template's layer) and re-parented there, so the layers in
 * between can go. VMs already running keep the files they opened.
 */
export async function flattenChains(sc: ServiceContext): Promise<string[]> {
  const done: string[] = [];
  for (const snap of sc.store.listSnapshots()) {
    // Leaves only: flattening one re-parents it and frees the layers below for collection.
    if (sc.store.snapshotDependents(snap.id).snapshots.length) continue;
    const layers = chain(sc, snap);
    if (layers.length <= MAX_DISK_CHAIN) continue;
    const root = layers[layers.length - 1];
    if (!root) continue;
    await sc.locks.run(`snapshot:${snap.id}`, async () => {
      if (await flattenOnto(sc, snap, root)) {
        done.push(snap.id);
        sc.log.info({ snapshotId: snap.id, layers: layers.length }, 'disk chain flattened');
      }
    });
  }
  if (done.length) await collectInternalSnapshots(sc);
  return done;
}

/** Rewrites `snap`'s disk as one layer over `root`'s and re-parents it there. */
async function flattenOnto(sc: ServiceContext, snap: SnapshotRecord, root: SnapshotRecord): Promise<boolean> {
  const dir = snapDir(sc, snap.id);
  const disk = snap.artifacts.find((a) => a.kind === 'disk');
  const rootDisk = root.artifacts.find((a) => a.kind === 'disk');
  if (!disk || !rootDisk) return false;
  const tmp = join(dir, `${disk.path}.flat`);
  await rm(tmp, { force: true });
  await sc.driver.disks.flatten(join(dir, disk.path), join(snapDir(sc, root.id), rootDisk.path), tmp);
  const flat = await artifact(dir, 'disk', `${disk.path}.flat`);
  await rename(tmp, join(dir, disk.path));
  sc.store.updateSnapshot(snap.id, {
    parentId: root.id,
    artifacts: snap.artifacts.map((a) => (a.kind === 'disk' ? { ...flat, path: disk.path } : a)),
  });
  return true;
}
