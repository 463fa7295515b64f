import { KilnError } from '../../core/errors.ts';
import { CONSOLE_LINES, consoleExcerpt, exitReason } from '../console.ts';
import type { ServiceContext } from '../sandbox/context.ts';
import { killVm } from '../sandbox/vm.ts';
import { LIVE } from '../sandbox/types.ts';
import type { ReconcileReport } from './reconcile.ts';

type VmAtStartUp = { state: 'up' } | { state: 'gone'; reason: string } | { state: 'unknown'; error: unknown };

/**
 * Every live sandbox: re-adopted when its VM runs (or, paused, when it has its pause snapshot),
 * left as it is when its VM cannot be checked, else marked dead. Resolves with the ids of the
 * live sandboxes (the VMs they explain are not orphans).
 */
export async function adoptSandboxes(sc: ServiceContext, out: ReconcileReport): Promise<Set<string>> {
  const known = new Set<string>();
  for (const s of sc.store.listSandboxes({ states: [...LIVE] }, { limit: 1000 }).items) {
    known.add(s.id);
    const vm = await vmAtStartUp(sc, s.id);
    if (vm.state === 'unknown') {
      sc.log.warn({ err: vm.error, sandboxId: s.id }, 'cannot check the VM at start-up; left as is');
      out.unchecked.push(s.id);
      continue;
    }
    if (s.state === 'running' && vm.state === 'up') {
      out.adopted.push(s.id);
      continue;
    }
    // A paused sandbox has no VM: it lives in its pause snapshot.
    if (s.state === 'paused' && s.sourceSnapshotId) {
      // Whatever VM (or leftover directory of one) carries its id is stale.
      await killVm(sc, s.id);
      out.adopted.push(s.id);
      continue;
    }
    await killVm(sc, s.id);
    sc.store.updateSandbox(s.id, {
      state: 'dead',
      endReason:
        s.state === 'killing'
          ? (s.endReason ?? 'killed')
          : vm.state === 'gone'
            ? vm.reason
            : 'lost in a daemon restart',
    });
    out.dead.push(s.id);
  }
  return known;
}

/**
 * What start-up finds of a sandbox's VM: `up` (re-adoptable), or gone with the reason to record
 * (the console's last words when it exited; a QEMU whose directory vanished is killed, as it
 * cannot be re-adopted without its QMP socket), or `unknown` on a host error.
 */
async function vmAtStartUp(sc: ServiceContext, id: string): Promise<VmAtStartUp> {
  try {
    const info = await sc.driver.status(id);
    if (info.state !== 'stopped') return { state: 'up' };
    const lines = await sc.driver.consoleTail(id, CONSOLE_LINES).catch(() => [] as string[]);
    if (lines.length) sc.store.appendEvent(id, 'warn', exitReason(lines), { console: consoleExcerpt(lines) });
    return { state: 'gone', reason: `lost in a daemon restart (${exitReason(lines)})` };
  } catch (e) {
    if (!(e instanceof KilnError && e.code === 'not_found')) return { state: 'unknown', error: e };
    const pids = e.details?.['pids'];
    return {
      state: 'gone',
      reason: Array.isArray(pids)
        ? `lost in a daemon restart: its VM directory was gone and its QEMU (pid ${pids.join(', ')}) could not be re-adopted without its QMP socket, so it was killed`
        : 'lost in a daemon restart',
    };
  }
}
