/**
 * Following a build's log as it is written (the dashboard's live build log): the build run
 * pulses `BuildWatch.changed` after every log line and status change; a follower reads what is
 * new from the store when pulsed, and waits otherwise. No timer, no polling: a follower costs
 * one store read per pulse, and nothing while the build is quiet.
 */
import type { TemplateBuildRecord } from '../../core/domain.ts';
import type { BuildLogEntry } from '../../core/template-steps.ts';
import type { Store } from '../../store/store.ts';

/** Lines read from the store per step: a follower that is behind catches up in pages. */
export const FOLLOW_PAGE = 500;

/** Who waits for which build: resolved on the next change of that build. */
export class BuildWatch {
  readonly #waiters = new Map<string, Set<() => void>>();

  /** A build's log grew or its record changed: every waiter of it wakes. */
  changed(buildId: string): void {
    const w = this.#waiters.get(buildId);
    if (!w) return;
    this.#waiters.delete(buildId);
    for (const wake of w) wake();
  }

  /** Resolves at the next change of `buildId`, or when `signal` aborts (the waiter is dropped). */
  wait(buildId: string, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      if (signal?.aborted) {
        resolve();
        return;
      }
      let set = this.#waiters.get(buildId);
      if (!set) this.#waiters.set(buildId, (set = new Set()));
      const wake = (): void => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = (): void => {
        const s = this.#waiters.get(buildId);
        s?.delete(wake);
        if (s?.size === 0) this.#waiters.delete(buildId);
        resolve();
      };
      set.add(wake);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Waiters in all (tests: none is left behind). */
  get waiting(): number {
    let n = 0;
    for (const s of this.#waiters.values()) n += s.size;
    return n;
  }
}

/** What a follower gets: lines from offset `from` (in order, none skipped), then the end once. */
export type BuildFollowEvent =
  { kind: 'lines'; from: number; lines: BuildLogEntry[] } | { kind: 'end'; build: TemplateBuildRecord };

/**
 * Build `buildId`'s log from line `offset`: what is written already (in pages), then each new
 * line as it is written, and last its end (the record once it is no longer `building`). Ends
 * without an end event when `signal` aborts. A build's final status is saved after its last
 * line (run-build.ts), so the end comes after every line.
 */
export async function* followBuild(
  store: Pick<Store, 'buildLogs' | 'getBuild'>,
  watch: BuildWatch,
  buildId: string,
  offset: number,
  signal?: AbortSignal,
): AsyncGenerator<BuildFollowEvent, void, undefined> {
  let next = offset;
  while (!signal?.aborted) {
    const lines = store.buildLogs(buildId, next, FOLLOW_PAGE);
    if (lines.length > 0) {
      yield { kind: 'lines', from: next, lines };
      next += lines.length;
      continue;
    }
    const b = store.getBuild(buildId);
    if (b.status !== 'building') {
      yield { kind: 'end', build: b };
      return;
    }
    // Read and wait without an await between them: no line can be written in the gap.
    await watch.wait(buildId, signal);
  }
}
