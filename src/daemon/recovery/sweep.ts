import { readdir, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { OPEN_NETWORK, type EgressRules } from '../../core/network-policy.ts';
import type { ServiceContext } from '../sandbox/context.ts';
import { killVm } from '../sandbox/vm.ts';
import type { ReconcileReport } from './reconcile.ts';

/** Kills the VMs no live sandbox explains. */
export async function killOrphanVms(
  sc: ServiceContext,
  known: Set<string>,
  out: ReconcileReport,
): Promise<void> {
  // A host error listing VMs skips the sweep (nothing is killed on a guess); the next start redoes it.
  const vms = await sc.driver.list().catch((e: unknown) => {
    sc.log.warn({ err: e }, 'cannot list VMs at start-up; orphan VMs are left for the next start');
    return [] as string[];
  });
  for (const vm of vms) {
    if (known.has(vm)) continue;
    await killVm(sc, vm);
    out.orphans.push(vm);
  }
}

/** Removes staging directories and the snapshot directories no record (or open snapshot) explains. */
export async function removeOrphanSnapshotDirs(sc: ServiceContext, out: ReconcileReport): Promise<void> {
  const recorded = new Set(sc.store.listSnapshots().map((x) => x.id));
  // The directories of snapshots still to be finished are not orphans.
  for (const op of sc.store.openOperations()) {
    const dirStep = op.steps.find((st) => st.name === 'snapshot dir');
    if (dirStep?.undo.action === 'remove-path') recorded.add(basename(dirStep.undo.path));
  }
  for (const f of await readdir(join(sc.dataDir, 'snapshots')).catch(() => [] as string[])) {
    // Staging dirs of interrupted template builds and snapshot dirs no record explains.
    if (f.startsWith('.staging-') || !recorded.has(f)) {
      await rm(join(sc.dataDir, 'snapshots', f), { recursive: true, force: true });
      out.orphanSnapshotDirs.push(f);
    }
  }
}

/**
 * Destroys the network slots no VM runs in (made ahead, or left by a crash at any step of a
 * create or a kill) and refills the ready pool. Any doubt about which slots live VMs use (a VM
 * that cannot be listed or checked) skips it: a slot is never taken from under a running VM.
 */
export async function reconcileNetworks(sc: ServiceContext): Promise<void> {
  const nets = sc.networks;
  if (!nets) return;
  try {
    const inUse: { namespace: string; owner: string; rules: EgressRules }[] = [];
    const pool = new Set(sc.store.listPoolVms().map((m) => m.id));
    for (const vm of await sc.driver.list()) {
      const ns = (await sc.driver.status(vm)).namespace;
      // Every VM left after the sweep is a live sandbox's (VM id = sandbox id) or a warm pool
      // member's (open rules until a create takes it).
      const rules = pool.has(vm) ? OPEN_NETWORK.egress : sc.store.getSandbox(vm).network.egress;
      if (ns) inUse.push({ namespace: ns, owner: vm, rules });
    }
    const { removed } = await nets.reconcile(inUse);
    if (removed > 0) sc.log.info({ removed }, 'removed network slots no VM uses');
  } catch (e) {
    sc.log.warn(
      { err: e },
      'cannot tell which network slots VMs use; unused slots are left for the next start',
    );
  }
}
