import { KilnError } from '../../core/errors.ts';
import type { ServiceContext } from '../sandbox/context.ts';
import { killVm } from '../sandbox/vm.ts';
import type { ReconcileReport } from './reconcile.ts';

/**
 * Warm pool members at start-up (after the journal's replay unwound every interrupted fill, so
 * a member still `starting` is one whose unwinding failed): a `ready` member whose VM runs is
 * kept as a member; the others are removed (VM killed, network slot released, record deleted).
 * A member whose VM cannot be checked (a host error) is left as it is, never killed on a guess;
 * the pool's own passes check it again. Resolves with the ids of the members kept, whose VMs
 * are then no orphans.
 */
export async function adoptPool(sc: ServiceContext, out: ReconcileReport): Promise<Set<string>> {
  const kept = new Set<string>();
  for (const m of sc.store.listPoolVms()) {
    let up: boolean;
    try {
      up = (await sc.driver.status(m.id)).state !== 'stopped';
    } catch (e) {
      if (!(e instanceof KilnError && e.code === 'not_found')) {
        sc.log.warn({ err: e, vmId: m.id }, 'cannot check a warm pool VM at start-up; left as is');
        kept.add(m.id);
        continue;
      }
      up = false;
    }
    if (up && m.state === 'ready') {
      kept.add(m.id);
      out.poolAdopted.push(m.id);
      continue;
    }
    sc.store.deletePoolVm(m.id);
    await killVm(sc, m.id);
    out.poolRemoved.push(m.id);
  }
  return kept;
}
