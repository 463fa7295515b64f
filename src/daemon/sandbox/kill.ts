import type { SandboxRecord } from '../../core/domain.ts';
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
    sc.store.updateSandbox(id, { state: 'killing' });
    sc.agentPorts.delete(id);
    await killVm(sc, id);
    const rec = sc.store.updateSandbox(id, { state: 'dead', endReason: reason });
    run.done();
    sc.store.appendEvent(id, 'info', `sandbox ended: ${reason}`, { opId: ctx.opId ?? null });
    await collectInternalSnapshots(sc);
    return rec;
  } catch (e) {
    await run.fail(e);
    throw e;
  }
}
