/**
 * A sandbox's volume mounts in its guest (see daemon/volumes): validating a create's mounts,
 * mounting them after /init, and making a restored guest's sshfs reconnect at once.
 */
import type { VolumeMount } from '../../core/domain.ts';
import { KilnError, invalidArgument } from '../../core/errors.ts';
import type { GuestClient } from '../guest-client.ts';
import { mountCommand, refreshCommand } from '../volumes/volume-service.ts';
import type { ServiceContext } from './context.ts';
import type { CreateRequest, OpCtx } from './types.ts';
import { agentUrl } from './vm.ts';

/**
 * The create's volume mounts, validated: volumes need sandbox networks (the guest reaches its
 * volumes through its namespace), so without them any mount is refused.
 */
export function planVolumes(sc: ServiceContext, id: string, req: CreateRequest, ctx: OpCtx): VolumeMount[] {
  const want = req.volumeMounts ?? [];
  if (want.length === 0) return [];
  if (sc.unisolated || !sc.volumes)
    throw invalidArgument(
      'volumeMounts',
      'volumes need sandbox network isolation, which this kilnd runs without (KILN_NETWORK=unisolated)',
    );
  return sc.volumes.planMounts(id, want, ctx.caller);
}

/** The guest client of VM `id` (running or being created) with the sandbox's token. */
async function guestOf(sc: ServiceContext, id: string, token: string, ctx: OpCtx): Promise<GuestClient> {
  const baseUrl = agentUrl(await sc.driver.status(id));
  return sc.guest({ baseUrl, accessToken: token, ...(ctx.opId ? { opId: ctx.opId } : {}) });
}

/** Mounts the sandbox's volumes in its guest (as root); a failure fails the create. */
export async function mountInGuest(
  sc: ServiceContext,
  id: string,
  token: string,
  mounts: VolumeMount[],
  ctx: OpCtx,
): Promise<void> {
  const r = await (
    await guestOf(sc, id, token, ctx)
  ).exec(mountCommand(mounts), {
    user: 'root',
    timeoutMs: 60_000,
  });
  if (r.exitCode !== 0)
    throw new KilnError(
      'guest_agent_error',
      `mounting the sandbox's volumes failed: ${r.stderr.trim().slice(0, 500)}`,
      { details: { sandboxId: id } },
    );
}

/**
 * After a restore (resume, or a create from a snapshot of a sandbox with volumes) the guest's
 * sshfs still holds the connection of the VM it was saved from: one request fails on it, then
 * sshfs reconnects (to this VM's slot). Made here, so the user's first access does not see the
 * failure. A guest whose mounts do not come back is noted in its events, not failed.
 */
export async function refreshMounts(
  sc: ServiceContext,
  id: string,
  token: string,
  mounts: readonly VolumeMount[],
  ctx: OpCtx,
): Promise<void> {
  if (mounts.length === 0) return;
  const r = await (
    await guestOf(sc, id, token, ctx)
  ).exec(refreshCommand(mounts), {
    user: 'root',
    timeoutMs: 60_000,
  });
  if (r.exitCode !== 0) {
    const msg = 'volume mounts did not reconnect after the restore';
    sc.store.appendEvent(id, 'warn', msg, { stderr: r.stderr.trim().slice(0, 500) });
    sc.log.warn({ sandboxId: id, stderr: r.stderr }, msg);
  }
}
