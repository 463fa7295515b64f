import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { SnapshotRecord } from '../../core/domain.ts';
import { KilnError } from '../../core/errors.ts';
import { writeFileAtomic } from '../../core/fs-atomic.ts';
import { exec } from './agent.ts';
import { beginCapture, captureFailed, finishCapture } from './capture.ts';
import type { ServiceContext } from './context.ts';
import { DISK_LAYER, META_FILE, POINT_OF_NO_RETURN } from './snapshot-files.ts';
import type { OpCtx } from './types.ts';
import { stopVm } from './vm.ts';

/** How long the guest's `sync` may take before the pause gives up (and the sandbox runs on). */
const SYNC_TIMEOUT_MS = 120_000;

/**
 * A filesystem-only pause (E2B's `keepMemory: false`), under the sandbox's lock: the guest
 * flushes its filesystems (`sync` through its agent), then the VM stops keeping its overlay as
 * the pause snapshot's only layer: no RAM, no device state. The sandbox is `paused` with
 * `pauseKind` `filesystem`; its resume boots a new guest on that disk (sandbox/boot.ts).
 * Journalled like a memory pause (`snapshot dir`, then `vm stopped`, the point of no return,
 * rolled forward by recovery/roll-forward.ts); a failure before it leaves the sandbox running.
 */
export async function pauseFilesystem(sc: ServiceContext, id: string, ctx: OpCtx): Promise<SnapshotRecord> {
  const c = beginCapture(sc, id, 'pause', null, ctx, true);
  let committed = false;
  try {
    // While the sandbox still runs (exec needs it): what the guest wrote reaches the disk.
    const synced = await exec(sc, id, 'sync', { user: 'root', timeoutMs: SYNC_TIMEOUT_MS }, ctx);
    if (synced.exitCode !== 0)
      throw new KilnError(
        'guest_agent_error',
        `sync in sandbox ${id} failed: ${synced.status} ${synced.stderr}`,
      );
    sc.store.updateSandbox(id, { state: 'pausing', pauseKind: 'filesystem' }, ['running']);
    sc.agentPorts.delete(id);
    await mkdir(c.dir, { recursive: true });
    c.run.step('snapshot dir', { action: 'remove-path', path: c.dir });
    await writeFileAtomic(join(c.dir, META_FILE), JSON.stringify(c.meta, null, 2));
    const t0 = performance.now();
    // Journalled before the step that crosses it: a stop cut short is finished at start-up.
    c.run.step(POINT_OF_NO_RETURN.pause, { action: 'none' });
    await stopVm(sc, id, { keepOverlayAs: join(c.dir, DISK_LAYER) });
    committed = true;
    return await finishCapture(sc, c, t0, ctx, {
      event: 'sandbox paused',
      patch: { state: 'paused' },
      data: { pauseKind: 'filesystem' },
    });
  } catch (e) {
    return captureFailed(sc, c, committed, e, () => {
      if (sc.store.getSandbox(id).state === 'pausing')
        sc.store.updateSandbox(id, { state: 'running', pauseKind: null });
    });
  }
}
