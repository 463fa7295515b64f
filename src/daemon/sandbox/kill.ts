import type { OperationRecord, SandboxRecord } from '../../core/domain.ts';
import { KilnError } from '../../core/errors.ts';
import { OpRun } from '../journal.ts';
import type { ServiceContext } from './context.ts';
import { collectInternalSnapshots } from './gc.ts';
import type { OpCtx } from './types.ts';
import { killVm } from './vm.ts';

/**
 * Ends a sandbox. A second kill while one runs is `conflict`; a dead one is `invalid_state`.
 * `locked` runs the kill under the sandbox's lock (the facade's), so a kill waits for a
 * snapshot, pause or resume in progress.
 */
export async function killSandbox(
  sc: ServiceContext,
  id: string,
  ctx: OpCtx,
  reason: string,
  locked: (fn: () => Promise<SandboxRecord>) => Promise<SandboxRecord>,
): Promise<SandboxRecord> {
  if (sc.killing.has(id))
    throw new KilnError('conflict', `kill ${id}: another kill of ${id} is in progress; retry later`);
  sc.killing.add(id);
  try {
    return await locked(() => killLocked(sc, id, ctx, reason));
  } finally {
    sc.killing.delete(id);
  }
}

async function killLocked(
  sc: ServiceContext,
  id: string,
  ctx: OpCtx,
  reason: string,
): Promise<SandboxRecord> {
  const s = sc.store.getSandbox(id);
  if (s.state === 'dead')
    throw new KilnError('invalid_state', `sandbox ${id} is already dead (${s.endReason ?? 'ended'})`);
  const run = new OpRun(sc, 'kill', id, ctx.opId);
  try {
    // The reason is recorded with `killing`: a kill is never undone, and one interrupted by a
    // crash at any step is finished at start-up with it (`finishKill`).
    sc.store.updateSandbox(id, { state: 'killing', endReason: reason });
    run.step(KILL_STEPS[0], { action: 'none' });
    sc.agentPorts.delete(id);
    await killVm(sc, id);
    run.step(KILL_STEPS[1], { action: 'none' });
    const rec = markKilled(sc, id, reason, ctx.opId ?? null);
    run.done();
    await collectInternalSnapshots(sc);
    return rec;
  } catch (e) {
    await run.fail(e);
    throw e;
  }
}

/** A kill's journalled steps: the sandbox marked `killing` (with its end reason), its VM gone. */
export const KILL_STEPS = ['killing', 'vm killed'] as const;

/** A kill's last step: the sandbox dead with `reason`, and the event saying so. */
function markKilled(sc: ServiceContext, id: string, reason: string, opId: string | null): SandboxRecord {
  const rec = sc.store.updateSandbox(id, { state: 'dead', endReason: reason });
  sc.store.appendEvent(id, 'info', `sandbox ended: ${reason}`, { opId });
  return rec;
}

/**
 * Finishes a kill interrupted by a crash (recovery): whatever step it reached, the VM is killed
 * (idempotent) and the sandbox ends with the reason its kill recorded (`killed` for a kill
 * journalled by an older kilnd, which recorded none).
 */
export async function finishKill(sc: ServiceContext, op: OperationRecord): Promise<void> {
  await killVm(sc, op.subject);
  const s = sc.store.getSandbox(op.subject);
  if (s.state !== 'dead') markKilled(sc, s.id, s.endReason ?? 'killed', op.requestId);
}
