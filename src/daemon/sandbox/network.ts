import type { SandboxRecord } from '../../core/domain.ts';
import { KilnError } from '../../core/errors.ts';
import type { EgressRules } from '../../core/network-policy.ts';
import type { ServiceContext } from './context.ts';
import { needIsolation } from './create.ts';
import type { OpCtx } from './types.ts';

/**
 * Replaces a sandbox's egress rules (E2B's `PUT /sandboxes/{id}/network`), under its lock.
 * Running: the network layer applies them first (`egress.apply`), and only then are they stored,
 * so a refusal changes nothing. Paused: stored only; its resume boots with them. Other states
 * (creating, pausing, resuming, killing, dead) are `invalid_state`: the lock makes the transient
 * ones wait, so they are seen only for a sandbox that ended or failed meanwhile.
 */
export async function updateNetwork(
  sc: ServiceContext,
  id: string,
  egress: EgressRules,
  ctx: OpCtx,
): Promise<SandboxRecord> {
  const s = sc.store.getSandbox(id);
  if (s.state !== 'running' && s.state !== 'paused')
    throw new KilnError(
      'invalid_state',
      `sandbox ${id} is ${s.state}; its network rules can be changed while it runs or is paused`,
      { details: { sandboxId: id, state: s.state } },
    );
  if (sc.unisolated) needIsolation('', egress);
  const applied = s.state === 'running' && sc.egress !== undefined;
  if (applied) await sc.egress?.apply(id, egress);
  let rec: SandboxRecord;
  try {
    rec = sc.store.updateSandbox(id, { network: { ...s.network, egress } }, [s.state]);
  } catch (e) {
    // The VM runs the new rules but the record keeps the old: put the old back in force.
    if (applied)
      await sc.egress?.apply(id, s.network.egress).catch((err: unknown) => {
        sc.log.error({ err, sandboxId: id }, 'restoring the old egress rules failed');
      });
    throw e;
  }
  sc.store.appendEvent(id, 'info', 'network rules updated', {
    allowOut: egress.allowOut,
    denyOut: egress.denyOut,
    internet: egress.internet,
    applied,
    opId: ctx.opId ?? null,
  });
  sc.log.info({ sandboxId: id, opId: ctx.opId, egress, applied }, 'network rules updated');
  return rec;
}
