import { rm } from 'node:fs/promises';
import type { Logger } from 'pino';
import { newId } from '../core/ids.ts';
import { KilnError } from '../core/errors.ts';
import type { GuestPlaced, OperationKind, OperationRecord, UndoAction } from '../core/domain.ts';
import type { Failpoint } from '../core/failpoint.ts';
import type { Store } from '../store/store.ts';
import type { VmmDriver } from '../vmm/driver.ts';
import type { NetworkProvider } from './networks.ts';
import { killVm } from './sandbox/vm.ts';

/** The journal's `guest-remove`: removes paths (and a tree a push placed) in a running guest. */
export type RemoveGuestPaths = (sandboxId: string, paths: string[], placed?: GuestPlaced) => Promise<void>;

/**
 * The journal's undo interpreter: carries out one journalled undo step, when an operation fails
 * (OpRun.fail) or when recovery replays an interrupted one. Idempotent: a step may run again
 * after a crash. It replays steps only; a normal kill calls `killVm` itself.
 */
export async function runUndo(
  a: UndoAction,
  deps: {
    store: Store;
    driver: VmmDriver;
    networks?: NetworkProvider | undefined;
    removeGuestPaths?: RemoveGuestPaths | undefined;
  },
): Promise<void> {
  switch (a.action) {
    case 'kill-vm':
      await killVm(deps, a.vmId);
      return;
    case 'release-network':
      await deps.networks?.release(a.namespace);
      return;
    case 'remove-path':
      await rm(a.path, { recursive: true, force: true });
      return;
    case 'delete-sandbox': {
      const s = deps.store.getSandbox(a.sandboxId);
      if (s.state !== 'dead')
        deps.store.updateSandbox(a.sandboxId, { state: 'dead', endReason: 'failed to start' });
      return;
    }
    case 'delete-snapshot':
      try {
        deps.store.deleteSnapshot(a.snapshotId);
      } catch (e) {
        if (!(e instanceof KilnError && e.code === 'not_found')) throw e;
      }
      return;
    case 'delete-template':
      try {
        deps.store.deleteTemplate(a.templateId);
      } catch (e) {
        if (!(e instanceof KilnError && e.code === 'not_found')) throw e;
      }
      return;
    case 'resume-vm':
      // A source VM paused for a snapshot runs again (if it still exists and is paused).
      await deps.driver.resume(a.vmId).catch((e: unknown) => {
        if (!(e instanceof KilnError && (e.code === 'not_found' || e.code === 'invalid_state'))) throw e;
      });
      return;
    case 'detach-volumes':
      // The sandbox no longer mounts anything: its volumes can be deleted.
      deps.store.setMounts(a.sandboxId, []);
      return;
    case 'guest-remove':
      // Only a running guest holds them: a dead or paused-then-killed one took them with it.
      await deps.removeGuestPaths?.(a.sandboxId, a.paths, a.placed);
      return;
    case 'delete-pool-vm':
      deps.store.deletePoolVm(a.vmId);
      return;
    case 'end-sandbox':
      await killVm(deps, a.sandboxId);
      endRecord(deps.store, a.sandboxId, a.reason);
      return;
    case 'fail-build':
      failBuild(deps.store, a.buildId, a.reason);
      return;
    case 'none':
      return;
  }
}

/** Sandbox `id`'s record dead with `reason` (a record already dead or gone stays as it is). */
function endRecord(store: Store, id: string, reason: string): void {
  try {
    if (store.getSandbox(id).state !== 'dead') store.updateSandbox(id, { state: 'dead', endReason: reason });
  } catch (e) {
    if (!(e instanceof KilnError && e.code === 'not_found')) throw e;
  }
}

/** A template build still `building` ends `error` with `reason`; one that ended is left as it is. */
function failBuild(store: Store, buildId: string, reason: string): void {
  const b = store.getBuild(buildId);
  if (b.status !== 'building') return;
  const now = new Date().toISOString();
  // The line before the status: a follower of the log ends at the status.
  store.appendBuildLog(b.id, { timestamp: now, level: 'error', message: reason });
  store.putBuild({
    ...b,
    status: 'error',
    reason: { message: reason, step: 'finalize' },
    builderId: null,
    updatedAt: now,
    finishedAt: now,
  });
}

export interface OpRunDeps {
  store: Store;
  driver: VmmDriver;
  removeGuestPaths?: RemoveGuestPaths | undefined;
  log: Logger;
  /** Called as `(op kind, step name)` right after each step is recorded (crash tests). */
  failpoint?: Failpoint | undefined;
}

/**
 * One journalled operation: recorded before its first step, each completed step adds its undo
 * (as data, so a restarted daemon can run it), and it ends done or unwound. Undo steps are not
 * cancelled by the caller's abort and one failing undo does not stop the rest.
 */
export class OpRun {
  readonly op: OperationRecord;
  readonly #deps: OpRunDeps;
  readonly #undo: UndoAction[] = [];

  constructor(deps: OpRunDeps, kind: OperationKind, subject: string, requestId: string | undefined) {
    this.#deps = deps;
    this.op = deps.store.beginOperation({
      id: newId('op'),
      kind,
      subject,
      requestId: requestId ?? null,
      startedAt: new Date().toISOString(),
    });
  }

  step(name: string, undo: UndoAction): void {
    this.#deps.store.addStep(this.op.id, { name, undo, at: new Date().toISOString() });
    this.#undo.push(undo);
    this.#deps.failpoint?.(this.op.kind, name);
  }

  done(): void {
    this.#deps.store.finishOperation(this.op.id, 'done');
  }

  /** Unwinds every recorded step, newest first, then marks the operation undone. */
  async fail(err: unknown): Promise<void> {
    for (const u of [...this.#undo].reverse()) {
      await runUndo(u, this.#deps).catch((e: unknown) => {
        this.#deps.log.warn({ err: e, undo: u, opId: this.op.id }, 'undo step failed');
      });
    }
    this.#deps.store.finishOperation(this.op.id, 'undone', err instanceof Error ? err.message : String(err));
  }
}
