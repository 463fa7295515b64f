import type { SnapshotRecord } from '../../core/domain.ts';
import { KilnError } from '../../core/errors.ts';
import { OPEN_NETWORK, type EgressRules } from '../../core/network-policy.ts';
import type { OpRun } from '../journal.ts';
import { initGuest, type GuestSetup } from '../sandbox/boot.ts';
import type { ServiceContext } from '../sandbox/context.ts';
import type { OpCtx } from '../sandbox/types.ts';
import { agentUrl } from '../sandbox/vm.ts';
import { memberToken } from './fill.ts';

const sameRules = (a: EgressRules, b: EgressRules): boolean => JSON.stringify(a) === JSON.stringify(b);

/**
 * Whether a create can take a warm pool member: from the template's current snapshot (a
 * restore of another snapshot or a fork's clone cannot; pause snapshots are never restored), with no volumes to mount, and with
 * rules the member's network can be given (any, in a sandbox network slot; without sandbox
 * networks only internet on, as the member was started with).
 */
export function poolable(
  sc: ServiceContext,
  snap: SnapshotRecord,
  templateSnapshotId: string | null,
  o: { mounts: number; egress: EgressRules },
): boolean {
  // A template built from steps stands on a snapshot of its builder sandbox (kind `snapshot`):
  // what matters is that it is the template's current one.
  if (!sc.pool || snap.id !== templateSnapshotId || o.mounts > 0) return false;
  return sc.networks !== undefined || o.egress.internet;
}

/**
 * The rest of a create that took warm pool member `id` (already restored and answering): the
 * VM becomes the sandbox's (journalled `vm`: a failure or crash kills it), its network slot gets
 * the sandbox's rules, and /init sets it up exactly as after a restore (the sandbox's token,
 * env, clock, a fresh entropy seed) — presenting the token its fill gave it (`memberToken`),
 * which only kilnd can derive.
 */
export async function initPooled(
  sc: ServiceContext,
  id: string,
  snap: SnapshotRecord,
  g: GuestSetup,
  run: Pick<OpRun, 'step'>,
  ctx: OpCtx,
): Promise<{ restoreMs: number; readyMs: number; initMs: number; entropy: string; pooled: true }> {
  run.step('vm', { action: 'kill-vm', vmId: id });
  const t0 = performance.now();
  const info = await sc.driver.status(id);
  if (info.state === 'stopped')
    throw new KilnError('guest_agent_error', `warm pool VM ${id} stopped before it was taken`);
  if (!sameRules(g.egress, OPEN_NETWORK.egress)) {
    if (!sc.egress) throw new KilnError('internal', `no network enforcer for warm pool VM ${id}`);
    await sc.egress.apply(id, g.egress);
  }
  const guest = sc.guest({
    baseUrl: agentUrl(info),
    accessToken: g.token,
    ...(ctx.opId ? { opId: ctx.opId } : {}),
  });
  const entropy = await initGuest(sc, id, guest, snap, g, ctx, memberToken(snap, id));
  return { restoreMs: 0, readyMs: 0, initMs: Math.round(performance.now() - t0), entropy, pooled: true };
}
