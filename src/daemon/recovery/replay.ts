import type { OperationRecord } from '../../core/domain.ts';
import { KilnError } from '../../core/errors.ts';
import { runUndo } from '../journal.ts';
import { finishCollect } from '../sandbox/collect.ts';
import type { ServiceContext } from '../sandbox/context.ts';
import { finishKill } from '../sandbox/kill.ts';
import { pastPointOfNoReturn } from '../sandbox/snapshot-files.ts';
import { rollForwardSnapshot } from './roll-forward.ts';
import type { ReconcileReport } from './reconcile.ts';

const INTERRUPTED = 'interrupted by a daemon restart';

/** False only when the driver saw the VM gone; a host error propagates (nothing is undone on it). */
async function alive(sc: ServiceContext, id: string): Promise<boolean> {
  return sc.driver.status(id).then(
    (i) => i.state !== 'stopped',
    (e: unknown) => {
      if (e instanceof KilnError && e.code === 'not_found') return false;
      throw e;
    },
  );
}

/** A create or resume that got as far as a running sandbox with a live VM: finished, not undone. */
async function reachedRunning(sc: ServiceContext, op: OperationRecord): Promise<boolean> {
  if (op.kind !== 'create' && op.kind !== 'resume') return false;
  const s = sc.store.getSandbox(op.subject);
  return s.state === 'running' && (await alive(sc, s.id));
}

/**
 * Every operation the journal holds open (template builds last): finished when it got far
 * enough (a create or resume that reached running; a snapshot, fork or pause past its point of no
 * return; any kill; a garbage collection removal whose records went), else unwound by
 * replaying its undo steps, newest first.
 */
export async function replayOperations(sc: ServiceContext, out: ReconcileReport): Promise<void> {
  const open = sc.store.openOperations();
  // A template build encloses operations of its own (its builder's create, a layer's snapshot):
  // those finish or unwind first, while the builder they may need still runs; the build's own
  // undo (which ends the builder) comes last.
  const ordered = [...open.filter((o) => o.kind !== 'build'), ...open.filter((o) => o.kind === 'build')];
  for (const op of ordered) {
    if (await reachedRunning(sc, op)) {
      sc.store.finishOperation(op.id, 'done');
      continue;
    }
    // A removal by template garbage collection: finished if its records went, else nothing happened.
    if (op.kind === 'collect') {
      const finished = await finishCollect(sc, op);
      sc.store.finishOperation(op.id, finished ? 'done' : 'undone', finished ? undefined : INTERRUPTED);
      (finished ? out.finished : out.unwound).push(op.id);
      continue;
    }
    // A kill is never undone: interrupted at any step, it is finished.
    if (op.kind === 'kill') {
      await finishKill(sc, op);
      sc.store.finishOperation(op.id, 'done');
      out.finished.push(op.id);
      continue;
    }
    if (pastPointOfNoReturn(op)) {
      // Finish the snapshot rather than undo it; if that fails, keep its files and the open
      // op for the next start-up (undoing would delete a layer the source's disk sits on).
      if (await rollForwardSnapshot(sc, op)) {
        sc.store.finishOperation(op.id, 'done');
        out.finished.push(op.id);
      } else {
        out.stuck.push(op.id);
      }
      continue;
    }
    await unwind(sc, op);
    out.unwound.push(op.id);
  }
}

/** Replays an interrupted operation's undo steps and puts its sandbox back where it belongs. */
async function unwind(sc: ServiceContext, op: OperationRecord): Promise<void> {
  for (const step of [...op.steps].reverse()) {
    await runUndo(step.undo, sc).catch((e: unknown) => {
      sc.log.warn({ err: e, opId: op.id }, 'undo at start-up failed');
    });
  }
  // An unwound pause or resume leaves the sandbox as it was before.
  if (op.kind === 'pause' && sc.store.getSandbox(op.subject).state === 'pausing')
    sc.store.updateSandbox(op.subject, { state: 'running', pauseKind: null });
  if (op.kind === 'resume' && sc.store.getSandbox(op.subject).state === 'resuming')
    sc.store.updateSandbox(op.subject, { state: 'paused' });
  sc.store.finishOperation(op.id, 'undone', INTERRUPTED);
}
