import { createHmac, randomBytes } from 'node:crypto';
import type { PoolVmRecord, SnapshotRecord, TemplateRecord } from '../../core/domain.ts';
import { KilnError } from '../../core/errors.ts';
import { newId } from '../../core/ids.ts';
import { OPEN_NETWORK } from '../../core/network-policy.ts';
import { admit } from '../admission.ts';
import { CONSOLE_LINES } from '../console.ts';
import type { GuestClient } from '../guest-client.ts';
import { waitGuestReady } from '../guest-ready.ts';
import { OpRun } from '../journal.ts';
import { restoreSpec } from '../sandbox/boot.ts';
import type { ServiceContext } from '../sandbox/context.ts';
import { agentUrl, startVm } from '../sandbox/vm.ts';

/**
 * Restores one warm pool member of template `tpl` from its snapshot `snap`, waits until its
 * agent answers and warms it up (`warmUp`: its agent then holds the member's token, which only
 * kilnd can derive); its network slot has open rules (a take applies the sandbox's).
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
    // One client for /health and the warm-up's /init: the same connection, as a create does.
    const boot = sc.guest({ baseUrl: base });
    await waitGuestReady(boot, {
      what: `${base}/health`,
      timeoutMs: sc.readyTimeoutMs ?? 60_000,
      alive: async () => (await sc.driver.status(rec.id)).state !== 'stopped',
      consoleTail: () => sc.driver.consoleTail(rec.id, CONSOLE_LINES),
    });
    await warmUp(sc, boot, base, snap, memberToken(snap, rec.id));
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

/**
 * The access token a member of `snap`'s pool holds from its fill until a create takes it:
 * derived from the snapshot's bootstrap token (only kilnd knows it) and the member's id, so a
 * kilnd restarted with ready members still has it without storing another secret.
 */
export function memberToken(snap: SnapshotRecord, id: string): string {
  return createHmac('sha256', snap.guestToken ?? '')
    .update(`kiln warm pool member ${id}`)
    .digest('hex');
}

/**
 * Sets a member up as far as it can be before a create takes it, so under TCG its create does
 * not pay for the first run of that code: a restored QEMU starts with no translated code, and
 * the snapshot's agent has never run /init. So the fill runs an /init (the member's token
 * instead of the bootstrap one, the host's time, a seed) and one `true` through the agent's
 * command path as the template's default user. The create's /init then sets the sandbox's
 * token, env, time and another seed exactly as on a freshly restored member. No login shell: a
 * template's profile scripts are the sandbox's to run, not the pool's; what the command leaves
 * in the guest (a pid) is what any sandbox's earlier commands leave.
 */
async function warmUp(
  sc: ServiceContext,
  boot: GuestClient,
  baseUrl: string,
  snap: SnapshotRecord,
  token: string,
): Promise<void> {
  await boot.init(
    {
      accessToken: token,
      timestamp: new Date(sc.now()).toISOString(),
      entropySeed: randomBytes(64).toString('base64'),
    },
    snap.guestToken ?? undefined,
  );
  const r = await sc.guest({ baseUrl, accessToken: token }).exec('true', { login: false, timeoutMs: 60_000 });
  if (r.exitCode !== 0)
    throw new KilnError('guest_agent_error', `a warm pool VM's warm-up command failed: ${r.status}`);
}
