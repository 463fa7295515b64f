import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { SnapshotRecord } from '../../core/domain.ts';
import { KilnError } from '../../core/errors.ts';
import { writeFileAtomic } from '../../core/fs-atomic.ts';
import { newId } from '../../core/ids.ts';
import { OpRun } from '../journal.ts';
import { rollForwardSnapshot } from '../recovery/roll-forward.ts';
import { completeSnapshot } from './complete.ts';
import { snapDir, type ServiceContext } from './context.ts';
import { collectInternalSnapshots } from './gc.ts';
import { assertSnapshotNameFree } from './queries.ts';
import { FULL_STATE, META_FILE, type SnapshotMeta } from './snapshot-files.ts';
import type { OpCtx } from './types.ts';

/**
 * The steps a snapshot, a fork and a pause share. Each captures a running sandbox into a new
 * snapshot directory: begin (checks, journal, meta), save the full state (the vCPUs stop),
 * then the caller's own crossing of the point of no return (snapshot: freeze the disk and run
 * on; pause: stop the VM keeping its overlay), then finish (the completion step, the record,
 * the event). A failure before the crossing is unwound; after it, rolled forward.
 */
export interface Capture {
  sandboxId: string;
  run: OpRun;
  meta: SnapshotMeta;
  dir: string;
  log: Logger;
}

/** Checks the sandbox runs and the name is free, and opens the journalled operation. */
export function beginCapture(
  sc: ServiceContext,
  id: string,
  kind: SnapshotMeta['kind'],
  name: string | null,
  ctx: OpCtx,
  filesystemOnly = false,
): Capture {
  const s = sc.store.getSandbox(id);
  if (s.state !== 'running') {
    const what = kind === 'pause' ? 'pausing' : 'a snapshot';
    throw new KilnError('invalid_state', `sandbox ${id} is ${s.state}; ${what} needs running`);
  }
  // Again under the lock: two snapshots of one sandbox may have asked for the same name.
  if (name) assertSnapshotNameFree(sc, name);
  const caps = sc.driver.capabilities();
  // A filesystem-only pause saves no memory; its resume boots with RAM laid out like a restore's.
  const able =
    caps.cowRamSharing &&
    (filesystemOnly || caps.memorySnapshots) &&
    (kind === 'pause' || caps.liveDiskFreeze);
  if (!able) throw new KilnError('invalid_state', `this host's VMM driver cannot ${kind} a running sandbox`);
  const log = sc.log.child({ opId: ctx.opId, sandboxId: id });
  // A fork's snapshot is journalled as `fork` (its steps are a snapshot's; failpoints tell them apart).
  const run = new OpRun(sc, kind, id, ctx.opId);
  const meta: SnapshotMeta = {
    id: newId('snap', 16),
    name,
    kind,
    sandboxId: id,
    templateId: s.templateId,
    memoryMiB: s.memoryMiB,
    vcpus: s.vcpus,
    parentId: s.sourceSnapshotId,
    guestToken: s.accessToken,
    pauseMs: null,
    // A pause stays the sandbox's; a snapshot or fork is the key's that takes it (kiln's own or
    // the native API's: the sandbox's key's).
    ownerKeyId: kind === 'pause' ? s.ownerKeyId : (ctx.caller?.keyId ?? s.ownerKeyId),
    ...(filesystemOnly ? { filesystemOnly: true } : {}),
  };
  return { sandboxId: id, run, meta, dir: snapDir(sc, meta.id), log };
}

/**
 * Makes the snapshot directory (with its meta, for roll-forward) and saves the source's device
 * state and RAM into it; the source stays paused. Resolves with when the vCPUs stopped.
 */
export async function saveFullState(sc: ServiceContext, c: Capture): Promise<number> {
  // The machine the state is saved from is the one every restore of it must build.
  c.meta.machine = (await sc.driver.status(c.sandboxId)).machine;
  await mkdir(c.dir, { recursive: true });
  c.run.step('snapshot dir', { action: 'remove-path', path: c.dir });
  await writeFileAtomic(join(c.dir, META_FILE), JSON.stringify(c.meta, null, 2));
  c.run.step('source paused', { action: 'resume-vm', vmId: c.sandboxId });
  const t0 = performance.now();
  await sc.driver.saveState(c.sandboxId, join(c.dir, FULL_STATE));
  return t0;
}

/**
 * Past the point of no return: the completion step, the sandbox pointed at its new snapshot
 * (with `patch`: a pause's `paused`), the op done, the event, unused snapshots collected.
 */
export async function finishCapture(
  sc: ServiceContext,
  c: Capture,
  t0: number,
  ctx: OpCtx,
  outcome: { event: string; patch: { state?: 'paused' }; data?: Record<string, unknown> },
): Promise<SnapshotRecord> {
  c.meta.pauseMs = Math.round((performance.now() - t0) * 10) / 10;
  const snap = await completeSnapshot(sc, c.meta);
  sc.store.updateSandbox(c.sandboxId, { sourceSnapshotId: snap.id, ...outcome.patch });
  c.run.done();
  sc.store.appendEvent(c.sandboxId, 'info', outcome.event, {
    snapshotId: snap.id,
    pauseMs: c.meta.pauseMs,
    ...outcome.data,
    opId: ctx.opId ?? null,
  });
  c.log.info({ snapshotId: snap.id, kind: c.meta.kind, pauseMs: c.meta.pauseMs }, outcome.event);
  await collectInternalSnapshots(sc);
  return snap;
}

/**
 * A capture failed. Before its point of no return (`committed` false: the stop or freeze failed
 * and took itself back) it is unwound, `undoState` restores the sandbox's state, and `e` is
 * thrown. After it, the snapshot is finished now through recovery's roll-forward if possible,
 * else `e` is thrown and the next start-up finishes it.
 */
export async function captureFailed(
  sc: ServiceContext,
  c: Capture,
  committed: boolean,
  e: unknown,
  undoState?: () => void,
): Promise<SnapshotRecord> {
  c.log.warn({ err: e, committed }, 'snapshot failed');
  if (!committed) {
    await c.run.fail(e);
    undoState?.();
    throw e;
  }
  if (await rollForwardSnapshot(sc, sc.store.getOperation(c.run.op.id))) {
    sc.store.finishOperation(c.run.op.id, 'done');
    return sc.store.getSnapshot(c.meta.id);
  }
  c.log.error({ err: e, opId: c.run.op.id }, 'snapshot could not be completed; the next start-up retries');
  throw e;
}
