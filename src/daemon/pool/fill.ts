import type { PoolVmRecord, SnapshotRecord, TemplateRecord } from '../../core/domain.ts';
import { newId } from '../../core/ids.ts';
import { OPEN_NETWORK } from '../../core/network-policy.ts';
import { admit } from '../admission.ts';
import { waitGuestReady } from '../guest-client.ts';
import { OpRun } from '../journal.ts';
import { restoreSpec } from '../sandbox/boot.ts';
import type { ServiceContext } from '../sandbox/context.ts';
import { agentUrl, startVm } from '../sandbox/vm.ts';

/**
 * Restores one warm pool member of template `tpl` from its snapshot `snap` and waits until its
 * agent answers; it is NOT /init'ed (its agent keeps the snapshot's bootstrap token, so only
 * kilnd can set it up), and its network slot has open rules (a take applies the sandbox's).
 * Admitted like a create (`capacity` / `no_space` when it does not fit: the pool then stays
 * short). Journalled as a `pool-fill` operation: `pool record` (undo: delete it), `vm` (undo:
 * kill it), `network` (undo: release the slot), `guest ready`; any failure or crash before
 * `done` unwinds all of it.
 */
export async function fillOne(
  sc: ServiceContext,
  tpl: TemplateRecord,
  snap: SnapshotRecord,
): Promise<PoolVmRecord> {
  admit(sc, snap.memoryMiB, snap);
  const rec: PoolVmRecord = {
    id: newId('sbx', 16),
    templateId: tpl.id,
    snapshotId: snap.id,
    memoryMiB: snap.memoryMiB,
    state: 'starting',
    createdAt: new Date(sc.now()).toISOString(),
  };
  const run = new OpRun(sc, 'pool-fill', rec.id, undefined);
  try {
    sc.store.insertPoolVm(rec);
    run.step('pool record', { action: 'delete-pool-vm', vmId: rec.id });
    const spec = await restoreSpec(sc, rec.id, snap, true, false);
    run.step('vm', { action: 'kill-vm', vmId: rec.id });
    const info = await startVm(sc, spec, OPEN_NETWORK.egress, run);
    const base = agentUrl(info);
    await waitGuestReady(sc.guest({ baseUrl: base }), {
      what: `${base}/health`,
      timeoutMs: sc.readyTimeoutMs ?? 60_000,
      alive: async () => (await sc.driver.status(rec.id)).state !== 'stopped',
    });
    run.step('guest ready', { action: 'none' });
    // A drain (template deleted, memory pressure) may have removed the record meanwhile:
    // `not_found` here unwinds the fill, so its VM goes too.
    sc.store.markPoolVmReady(rec.id);
    run.done();
    return { ...rec, state: 'ready' };
  } catch (e) {
    await run.fail(e);
    throw e;
  }
}
