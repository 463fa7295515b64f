import { join } from 'node:path';
import type { SandboxRecord, SnapshotRecord } from '../../core/domain.ts';
import { KilnError } from '../../core/errors.ts';
import { admit } from '../admission.ts';
import { OpRun } from '../journal.ts';
import { bootFrom } from './boot.ts';
import { beginCapture, captureFailed, finishCapture, saveFullState } from './capture.ts';
import type { ServiceContext } from './context.ts';
import { DISK_LAYER, POINT_OF_NO_RETURN } from './snapshot-files.ts';
import type { OpCtx } from './types.ts';
import { stopVm } from './vm.ts';
import { refreshMounts } from './volume-mounts.ts';

/**
 * Pause = the snapshot capture with a stop instead of a freeze (under the sandbox's lock): the
 * VM stops keeping its overlay as the snapshot's disk layer; the sandbox keeps its id and
 * resumes from that snapshot.
 */
export async function pauseSandbox(sc: ServiceContext, id: string, ctx: OpCtx): Promise<SnapshotRecord> {
  const c = beginCapture(sc, id, 'pause', null, ctx);
  let committed = false;
  try {
    sc.store.updateSandbox(id, { state: 'pausing' }, ['running']);
    sc.agentPorts.delete(id);
    const t0 = await saveFullState(sc, c);
    // Journalled before the step that crosses it: a stop cut short is finished at start-up.
    c.run.step(POINT_OF_NO_RETURN.pause, { action: 'none' });
    await stopVm(sc, id, { keepOverlayAs: join(c.dir, DISK_LAYER) });
    committed = true;
    return await finishCapture(sc, c, t0, ctx, { event: 'sandbox paused', patch: { state: 'paused' } });
  } catch (e) {
    return captureFailed(sc, c, committed, e, () => {
      if (sc.store.getSandbox(id).state === 'pausing') sc.store.updateSandbox(id, { state: 'running' });
    });
  }
}

/**
 * Restores a paused sandbox under its own id and token (under its lock); its end time restarts
 * at `timeoutS`. Journalled (the VM); a failure leaves it paused.
 */
export async function resumeSandbox(
  sc: ServiceContext,
  id: string,
  timeoutS: number,
  ctx: OpCtx,
): Promise<SandboxRecord> {
  const log = sc.log.child({ opId: ctx.opId, sandboxId: id });
  const s = sc.store.getSandbox(id);
  if (s.state !== 'paused')
    throw new KilnError('invalid_state', `sandbox ${id} is ${s.state}; resume needs paused`);
  if (!s.sourceSnapshotId) throw new KilnError('internal', `paused sandbox ${id} has no pause snapshot`);
  const snap = sc.store.getSnapshot(s.sourceSnapshotId);
  admit(sc, s.memoryMiB, snap);
  const run = new OpRun(sc, 'resume', id, ctx.opId);
  try {
    sc.store.updateSandbox(id, { state: 'resuming' }, ['paused']);
    // The restored VM forwards the agent on a new host port.
    sc.agentPorts.delete(id);
    const g = { token: s.accessToken, envVars: s.envVars, egress: s.network.egress };
    const times = await bootFrom(sc, id, snap, g, run, ctx);
    await refreshMounts(sc, id, s.accessToken, sc.store.listMounts(id), ctx);
    const rec = sc.store.updateSandbox(
      id,
      {
        state: 'running',
        startedAt: new Date(sc.now()).toISOString(),
        endAt: new Date(sc.now() + timeoutS * 1000).toISOString(),
        condition: null,
      },
      ['resuming'],
    );
    run.done();
    sc.store.appendEvent(id, 'info', 'sandbox resumed', { snapshotId: snap.id, opId: ctx.opId ?? null });
    log.info({ snapshotId: snap.id, ...times }, 'sandbox resumed');
    return rec;
  } catch (e) {
    log.warn({ err: e }, 'resume failed; unwinding');
    await run.fail(e);
    if (sc.store.getSandbox(id).state === 'resuming') sc.store.updateSandbox(id, { state: 'paused' });
    throw e;
  }
}
