import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { SnapshotRecord } from '../../core/domain.ts';
import { KilnError } from '../../core/errors.ts';
import { artifact } from '../snapshot-archive.ts';
import { snapDir, type ServiceContext } from './context.ts';
import { MAX_DISK_CHAIN, type OpCtx } from './types.ts';

/**
 * Garbage collection of snapshot layers: deleting a snapshot, collecting the layers nothing
 * depends on (internal pause and fork snapshots, deleted snapshots), and flattening disk chains
 * that grew too long.
 *
 * A user's snapshot and its disk layer are two things: the source sandbox goes on over a new
 * overlay on the snapshot's frozen layer, restores stand on it, later snapshots are layered on
 * it. Deleting the snapshot hides it at once (store.hideSnapshot: not listed, not restorable,
 * its name free); the record stays as a layer and is reclaimed (record, then files) as soon as
 * nothing stands on it: right away, or by the collection after a kill, a snapshot, a fork, a
 * flatten or start-up.
 */

/**
 * Deletes a snapshot for its users, whatever still stands on its layer (see above); its layer
 * is reclaimed now if nothing does. A template's own snapshot is refused (it goes with the
 * template), and so is a paused sandbox's state while that sandbox stands on it.
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
  if (snap.kind === 'pause') {
    // The paused sandbox's own state: the store refuses while that sandbox stands on it.
    await reclaim(sc, snap);
  } else {
    // Hidden and its name freed at once, under the lock a reclaim takes (one transaction: a
    // crash leaves it either live or deleted; a deleted one is reclaimed at start-up if free).
    await sc.locks.run(`snapshot:${snap.id}`, () =>
      Promise.resolve(sc.store.hideSnapshot(snap.id, new Date(sc.now()).toISOString())),
    );
    await collectInternalSnapshots(sc);
  }
  sc.log.info({ opId: ctx.opId, snapshotId: snap.id }, 'snapshot deleted');
}

/**
 * Removes a snapshot's record and files. The store refuses while a sandbox or another snapshot
 * stands on its layer.
 */
async function reclaim(sc: ServiceContext, snap: SnapshotRecord): Promise<void> {
  await sc.locks.run(`snapshot:${snap.id}`, async () => {
    sc.store.deleteSnapshot(snap.id);
    // The record goes first: a crash before the files are gone leaves an orphan directory,
    // which start-up reconciliation removes.
    await rm(snapDir(sc, snap.id), { recursive: true, force: true });
  });
}

/** A layer collection reclaims: internal (pause, fork) or deleted by its user. */
const collectable = (snap: SnapshotRecord): boolean =>
  snap.deletedAt !== null || snap.kind === 'pause' || snap.kind === 'fork';

/**
 * Reclaims the layers nothing depends on any more: pause and fork snapshots whose sandboxes
 * ended or moved on, and deleted snapshots nothing stands on. Resolves with their ids.
 */
export async function collectInternalSnapshots(sc: ServiceContext): Promise<string[]> {
  const removed: string[] = [];
  for (let again = true; again;) {
    again = false;
    for (const snap of sc.store.listSnapshots()) {
      if (!collectable(snap)) continue;
      const deps = sc.store.snapshotDependents(snap.id);
      if (deps.snapshots.length || deps.sandboxes.length) continue;
      await reclaim(sc, snap).then(
        () => {
          removed.push(snap.id);
          again = true;
        },
        (e: unknown) => {
          // Another collection may have reclaimed it meanwhile.
          if (!(e instanceof KilnError && e.code === 'not_found'))
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
 * between can go. VMs already running keep the files they opened. It holds the locks of the
 * sandboxes standing on the snapshot, so that no pause, resume or kill of theirs opens or
 * records the chain while its file is replaced and the layers below are reclaimed.
 */
export async function flattenChains(sc: ServiceContext): Promise<string[]> {
  const done: string[] = [];
  for (const { id } of sc.store.listSnapshots()) {
    const users = sc.store.snapshotDependents(id).sandboxes;
    await underLocks(sc, [...users.sort(), `snapshot:${id}`], async () => {
      // Read again under the locks: the snapshot may be gone or stood upon by now.
      const snap = sc.store.listSnapshots().find((x) => x.id === id);
      // Leaves only: flattening one re-parents it and frees the layers below for collection.
      // Not one the collection takes (an internal layer nothing stands on any more, such as the
      // parent of a leaf flattened a moment ago).
      const deps = sc.store.snapshotDependents(id);
      if (!snap || deps.snapshots.length || (collectable(snap) && !deps.sandboxes.length)) return;
      const layers = chain(sc, snap);
      const root = layers[layers.length - 1];
      if (layers.length <= MAX_DISK_CHAIN || !root) return;
      if (await flattenOnto(sc, snap, root)) {
        done.push(id);
        sc.log.info({ snapshotId: id, layers: layers.length }, 'disk chain flattened');
      }
    });
  }
  if (done.length) await collectInternalSnapshots(sc);
  return done;
}

/** Runs `fn` holding every lock of `keys`, taken in that order. */
function underLocks(sc: ServiceContext, keys: string[], fn: () => Promise<void>): Promise<void> {
  const [first, ...rest] = keys;
  return first === undefined ? fn() : sc.locks.run(first, () => underLocks(sc, rest, fn));
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
