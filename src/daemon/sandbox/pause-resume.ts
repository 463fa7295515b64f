import { join } from 'node:path';
import type { SandboxRecord, SnapshotRecord } from '../../core/domain.ts';
import { KilnError } from '../../core/errors.ts';
import { admitMakingRoom } from '../admission.ts';
import { OpRun } from '../journal.ts';
import { bootFrom, isDiskOnly } from './boot.ts';
import { beginCapture, captureFailed, finishCapture, saveFullState } from './capture.ts';
import type { ServiceContext } from './context.ts';
import { pauseFilesystem } from './pause-fs.ts';
import { DISK_LAYER, POINT_OF_NO_RETURN } from './snapshot-files.ts';
import type { OpCtx } from './types.ts';
import { stopVm } from './vm.ts';
import { mountInGuest, refreshMounts } from './volume-mounts.ts';

/**
 * Pause = the snapshot capture with a stop instead of a freeze (under the sandbox's lock): the
 * VM stops keeping its overlay as the snapshot's disk layer; the sandbox keeps its id and
 * resumes from that snapshot. `memory: false`: a filesystem-only pause (pause-fs.ts).
 */
export async function pauseSandbox(
  sc: ServiceContext,
  id: string,
  ctx: OpCtx,
  opts: { memory?: boolean } = {},
): Promise<SnapshotRecord> {
  if (opts.memory === false) return pauseFilesystem(sc, id, ctx);
  const c = beginCapture(sc, id, 'pause', null, ctx);
  let committed = false;
  try {
    sc.store.updateSandbox(id, { state: 'pausing', pauseKind: 'memory' }, ['running']);
    sc.agentPorts.delete(id);
    const t0 = await saveFullState(sc, c);
    // Journalled before the step that crosses it: a stop cut short is finished at start-up.
    c.run.step(POINT_OF_NO_RETURN.pause, { action: 'none' });
    await stopVm(sc, id, { keepOverlayAs: join(c.dir, DISK_LAYER) });
    committed = true;
    return await finishCapture(sc, c, t0, ctx, { event: 'sandbox paused', patch: { state: 'paused' } });
  } catch (e) {
    return captureFailed(sc, c, committed, e, () => {
      if (sc.store.getSandbox(id).state === 'pausing')
        sc.store.updateSandbox(id, { state: 'running', pauseKind: null });
    });
  }
}

/**
 * Restores a paused sandbox under its own id and token (under its lock); its end time restarts
 * at `timeoutS`. A filesystem-only pause's snapshot has no memory: the guest boots afresh on its
 * disk (boot.ts). `memory: false` (E2B's `onResume: 'reboot'`) does the same with a memory
 * pause: a cold boot on its disk, the memory and device state ignored, left as they are until
 * the pause snapshot's own cleanup. Journalled (the VM, its network slot); a failure leaves it
 * paused (with its memory, resumable either way).
 */
export async function resumeSandbox(
  sc: ServiceContext,
  id: string,
  timeoutS: number,
  ctx: OpCtx,
  opts: { memory?: boolean } = {},
): Promise<SandboxRecord> {
  const log = sc.log.child({ opId: ctx.opId, sandboxId: id });
  const s = sc.store.getSandbox(id);
  if (s.state !== 'paused')
    throw new KilnError('invalid_state', `sandbox ${id} is ${s.state}; resume needs paused`);
  if (!s.sourceSnapshotId) throw new KilnError('internal', `paused sandbox ${id} has no pause snapshot`);
  const snap = sc.store.getSnapshot(s.sourceSnapshotId);
  await admitMakingRoom(sc, s.memoryMiB, snap);
  const run = new OpRun(sc, 'resume', id, ctx.opId);
  try {
    sc.store.updateSandbox(id, { state: 'resuming' }, ['paused']);
    // The restored VM forwards the agent on a new host port.
    sc.agentPorts.delete(id);
    const g = { token: s.accessToken, envVars: s.envVars, egress: s.network.egress };
    const coldBoot = opts.memory === false;
    const times = await bootFrom(sc, id, snap, g, run, ctx, { coldBoot });
    // A restored guest's sshfs reconnects; a guest booted afresh mounts its volumes anew.
    const mounts = sc.store.listMounts(id);
    if (coldBoot || isDiskOnly(snap)) await mountInGuest(sc, id, s.accessToken, mounts, ctx);
    else await refreshMounts(sc, id, s.accessToken, mounts, ctx);
    const rec = sc.store.updateSandbox(
      id,
      {
        state: 'running',
        startedAt: new Date(sc.now()).toISOString(),
        endAt: new Date(sc.now() + timeoutS * 1000).toISOString(),
        condition: null,
        pauseKind: null,
      },
      ['resuming'],
    );
    run.done();
    // A filesystem-only pause, or `memory: false`, resumes as a new boot of the guest on its disk.
    const rebooted = coldBoot || isDiskOnly(snap);
    sc.store.appendEvent(id, 'info', 'sandbox resumed', {
      snapshotId: snap.id,
      rebooted,
      // True when the pause kept memory and this resume did not use it.
      memoryIgnored: coldBoot && !isDiskOnly(snap),
      opId: ctx.opId ?? null,
    });
    log.info({ snapshotId: snap.id, rebooted, ...times }, 'sandbox resumed');
    return rec;
  } catch (e) {
    log.warn({ err: e }, 'resume failed; unwinding');
    await run.fail(e);
    if (sc.store.getSandbox(id).state === 'resuming') sc.store.updateSandbox(id, { state: 'paused' });
    throw e;
  }
}
