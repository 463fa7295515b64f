import { join } from 'node:path';
import type { SandboxRecord, SnapshotRecord } from '../../core/domain.ts';
import { KilnError, asKilnError } from '../../core/errors.ts';
import { beginCapture, captureFailed, finishCapture, saveFullState } from './capture.ts';
import type { ServiceContext } from './context.ts';
import { collectInternalSnapshots } from './gc.ts';
import { DISK_LAYER, POINT_OF_NO_RETURN } from './snapshot-files.ts';
import type { CreateRequest, OpCtx } from './types.ts';

/**
 * Snapshots a running sandbox (under its lock): its vCPUs stop while device state and RAM are
 * saved and its disk overlay is frozen (the VM goes on over a new overlay, no copy), then it
 * runs again. The completion step then moves the RAM into a memory file, so restores map it
 * copy-on-write like a template's.
 */
export async function takeSnapshot(
  sc: ServiceContext,
  id: string,
  kind: 'snapshot' | 'fork',
  name: string | null,
  ctx: OpCtx,
): Promise<SnapshotRecord> {
  const c = beginCapture(sc, id, kind, name, ctx);
  let committed = false;
  try {
    const t0 = await saveFullState(sc, c);
    // The point of no return is journalled before the step that crosses it: a crash inside
    // that step is finished at start-up (freezeDisk picks up where it was).
    c.run.step(POINT_OF_NO_RETURN.snapshot, { action: 'none' });
    await sc.driver.freezeDisk(id, join(c.dir, DISK_LAYER));
    // From here the source's disk sits on the new layer: the snapshot is finished, not undone.
    committed = true;
    await sc.driver.resume(id);
    return await finishCapture(sc, c, t0, ctx, { event: 'snapshot taken', patch: {} });
  } catch (e) {
    return captureFailed(sc, c, committed, e);
  }
}

/** Refuses to restore a pause snapshot into a new sandbox (it is its sandbox's own state). */
export function assertRestorable(snap: SnapshotRecord): void {
  if (snap.kind === 'pause')
    throw new KilnError(
      'invalid_state',
      `snapshot ${snap.id} is a paused sandbox's state; resume that sandbox instead`,
    );
}

export interface ForkResult {
  snapshot: SnapshotRecord;
  results: ({ sandbox: SandboxRecord } | { error: KilnError })[];
}

/** The `count` concurrent restores of a fork's snapshot, each with the source's network rules; each clone's outcome is its own. */
export async function forkClones(
  sc: ServiceContext,
  src: SandboxRecord,
  snap: SnapshotRecord,
  opts: { count: number; timeoutS?: number | undefined },
  ctx: OpCtx,
  create: (req: CreateRequest, ctx: OpCtx) => Promise<SandboxRecord>,
): Promise<ForkResult> {
  // The clones belong to the key that forks, else (native API) to the source's key.
  const cloneCtx: OpCtx = {
    ...ctx,
    caller: ctx.caller ?? (src.ownerKeyId ? { keyId: src.ownerKeyId, admin: false } : undefined),
  };
  const settled = await Promise.allSettled(
    Array.from({ length: opts.count }, () =>
      create(
        {
          template: snap.id,
          ...(opts.timeoutS !== undefined ? { timeoutS: opts.timeoutS } : {}),
          metadata: src.metadata,
          network: src.network,
        },
        cloneCtx,
      ),
    ),
  );
  const results = settled.map((r) =>
    r.status === 'fulfilled' ? { sandbox: r.value } : { error: asKilnError(r.reason) },
  );
  await collectInternalSnapshots(sc);
  return { snapshot: snap, results };
}
