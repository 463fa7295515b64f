/**
 * The journalled removal of one unused hidden template and/or snapshot: what template garbage
 * collection (daemon/templates/gc.ts) decided to remove.
 *
 * Records first, in one transaction that re-checks that nothing depends on the snapshot
 * (`store.dropUnused`: no sandbox, warm pool member, child snapshot or template), then the
 * files: the snapshot's directory is renamed aside as a whole (`.gc-<op id>`) and that is
 * removed. Removing the records is the point of no return (`records removed`): from there the
 * removal is finished, never undone, in-process or at start-up (`finishCollect`). So a kill -9
 * at any point leaves the snapshot whole (record and directory) or neither, never a record
 * without its files or a half-removed directory under its own name.
 */
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { OperationRecord } from '../../core/domain.ts';
import { KilnError } from '../../core/errors.ts';
import { DELETED_TEMPLATE_PREFIX } from '../../core/template-steps.ts';
import { OpRun } from '../journal.ts';
import { snapDir, type ServiceContext } from './context.ts';
import type { OpCtx } from './types.ts';

/** The steps a removal journals, in order (crash tests cover each). */
export const COLLECT_STEPS = ['records removed', 'files moved'] as const;

/** What one removal takes: a hidden template with its current snapshot, or a snapshot alone. */
export interface UnusedTarget {
  templateId: string | null;
  snapshotId: string | null;
}

/** `kept`: something came to depend on it meanwhile (nothing changed); `tombstoned`: dead sandboxes still name the template. */
export type RemoveOutcome = 'removed' | 'tombstoned' | 'kept';

const trashDir = (sc: ServiceContext, opId: string): string => join(sc.dataDir, 'snapshots', `.gc-${opId}`);

/**
 * Removes `t` unless `stillUnused()` says otherwise or the store finds a dependent. Both checks
 * run in one synchronous stretch with the transaction, so a build that takes the layer (which it
 * does synchronously with finding it) either sees it gone or keeps it.
 */
export async function removeUnused(
  sc: ServiceContext,
  t: UnusedTarget,
  stillUnused: () => boolean,
  ctx: OpCtx = {},
): Promise<RemoveOutcome> {
  const subject = t.snapshotId ?? t.templateId;
  if (subject === null) return 'kept';
  return sc.locks.run(`snapshot:${subject}`, async () => {
    if (!stillUnused()) return 'kept';
    const run = new OpRun(sc, 'collect', subject, ctx.opId);
    let tombstoned: boolean;
    try {
      const tombstone = t.templateId === null ? null : `${DELETED_TEMPLATE_PREFIX}${t.templateId}`;
      tombstoned = sc.store.dropUnused({ ...t, tombstone }).tombstoned;
    } catch (e) {
      await run.fail(e);
      if (e instanceof KilnError && (e.code === 'invalid_state' || e.code === 'not_found')) return 'kept';
      throw e;
    }
    // Past this point the removal is finished, never undone (a failure leaves the op open for start-up).
    run.step(COLLECT_STEPS[0], { action: 'none' });
    if (t.snapshotId !== null) {
      await rename(snapDir(sc, t.snapshotId), trashDir(sc, run.op.id)).catch((e: unknown) => {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      });
      run.step(COLLECT_STEPS[1], { action: 'none' });
      await rm(trashDir(sc, run.op.id), { recursive: true, force: true });
    }
    run.done();
    sc.log.info({ opId: ctx.opId, ...t, tombstoned }, 'unused template layer removed');
    return tombstoned ? 'tombstoned' : 'removed';
  });
}

/**
 * Start-up: an interrupted removal. Its records are either all there (the transaction never
 * committed: nothing was removed, answers false) or all gone: then its files go too, wherever
 * the crash left them (under the snapshot's name, or moved aside), and it answers true.
 */
export async function finishCollect(sc: ServiceContext, op: OperationRecord): Promise<boolean> {
  try {
    sc.store.getSnapshot(op.subject);
    return false;
  } catch (e) {
    if (!(e instanceof KilnError && e.code === 'not_found')) throw e;
  }
  // A template-only removal has no directory; its subject names none.
  await rm(snapDir(sc, op.subject), { recursive: true, force: true });
  await rm(trashDir(sc, op.id), { recursive: true, force: true });
  return true;
}
