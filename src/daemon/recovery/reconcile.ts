/**
 * Start-up recovery (containerd's `restart.go`): after a crash or a restart of kilnd, bring the
 * store, the VMs and the snapshot directories back into agreement.
 *
 * Assumptions it makes:
 * - It runs once, before the API serves and before the background loops start: nothing else
 *   holds a sandbox's lock or changes the store while it runs.
 * - The journal (store `operations`) is the truth about what was in flight: every step of a
 *   multi-step operation was recorded (with its undo, as data) before the step's effect could
 *   outlive a crash, and every undo is idempotent (it may have run already, or half).
 * - A snapshot, fork or pause whose point of no return (`disk frozen`, `vm stopped`) is journalled is
 *   finished, never undone: the source's disk may already sit on the new layer. Its directory
 *   holds `snapshot.json` (written before the state is saved), so it can be finished from there
 *   by the same completion step as an uninterrupted snapshot (`roll-forward.ts`).
 * - A create or resume whose sandbox is `running` with a live VM got past its last step.
 * - A kill is never undone: interrupted at any step (`killing`, `vm killed`), it is finished: the
 *   VM killed, the sandbox dead with the end reason its kill recorded with `killing`.
 * - A template garbage collection removal (`collect`) removed its records in one transaction
 *   before touching files: records gone, it is finished (its directory, under its own name or
 *   moved aside as `.gc-<op>`, removed); records there, nothing happened.
 * - VMs outlive kilnd (QEMU is daemonized) and are re-adopted by id through the driver. Only a
 *   positive observation (the driver says gone) ends a sandbox; a host error leaves it as it is
 *   (`unchecked`) and an error listing VMs kills nothing.
 * - Warm pool members (`pool_vms`) are VMs without a sandbox: an interrupted fill is unwound by
 *   the journal like any operation; a ready member whose VM runs is kept, the others removed
 *   (adopt-pool.ts). The pool refills once the background starts.
 * - Under `<dataDir>/snapshots`, a directory no snapshot record and no open operation explains,
 *   and every `.staging-*` directory, is garbage.
 */
import type { ServiceContext } from '../sandbox/context.ts';
import { collectInternalSnapshots } from '../sandbox/gc.ts';
import { adoptSandboxes } from './adopt.ts';
import { adoptPool } from './adopt-pool.ts';
import { replayOperations } from './replay.ts';
import { killOrphanVms, reconcileNetworks, removeOrphanSnapshotDirs } from './sweep.ts';

export interface ReconcileReport {
  /** Sandboxes kept: running with a live VM, or paused. */
  adopted: string[];
  dead: string[];
  /** VMs no record explains, killed. */
  orphans: string[];
  /** Interrupted operations taken back. */
  unwound: string[];
  /** Interrupted operations finished: snapshots, forks and pauses past their point of no return, kills. */
  finished: string[];
  /** Snapshot directories no record explains, removed. */
  orphanSnapshotDirs: string[];
  /** Snapshots past their point of no return that could not be finished (kept for the next start). */
  stuck: string[];
  /**
   * Live sandboxes whose VM could not be checked (a host error such as EMFILE, a QEMU that does
   * not answer): left as they are for the liveness watcher, never declared dead on that.
   */
  unchecked: string[];
  /** Warm pool members kept: ready, their VM running. */
  poolAdopted: string[];
  /** Warm pool members removed (VM gone, or a fill whose unwinding failed before). */
  poolRemoved: string[];
}

/**
 * Unwinds interrupted operations (or finishes those past their point of no return), re-adopts
 * sandboxes whose VM still runs, marks the others dead, kills VMs and removes snapshot and
 * staging directories that no record explains, then collects unused internal snapshots.
 */
export async function reconcile(sc: ServiceContext): Promise<ReconcileReport> {
  const out: ReconcileReport = {
    adopted: [],
    dead: [],
    orphans: [],
    unwound: [],
    finished: [],
    orphanSnapshotDirs: [],
    stuck: [],
    unchecked: [],
    poolAdopted: [],
    poolRemoved: [],
  };
  await replayOperations(sc, out);
  const known = await adoptSandboxes(sc, out);
  for (const id of await adoptPool(sc, out)) known.add(id);
  await killOrphanVms(sc, known, out);
  await reconcileNetworks(sc);
  await removeOrphanSnapshotDirs(sc, out);
  await collectInternalSnapshots(sc);
  return out;
}
