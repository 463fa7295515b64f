import type { BuildLogEntry } from '../../core/template-steps.ts';
import type { BuildRunDeps } from './run-build.ts';

/**
 * A build's log: persisted line by line (status answers from it, also after a restart); each
 * line wakes the log's followers.
 */
export class BuildLog {
  readonly #d: Pick<BuildRunDeps, 'store' | 'now' | 'watch'>;
  readonly #buildId: string;
  constructor(d: Pick<BuildRunDeps, 'store' | 'now' | 'watch'>, buildId: string) {
    this.#d = d;
    this.#buildId = buildId;
  }
  add(level: BuildLogEntry['level'], message: string, step?: string): void {
    this.#d.store.appendBuildLog(this.#buildId, {
      timestamp: new Date(this.#d.now()).toISOString(),
      level,
      message,
      ...(step !== undefined ? { step } : {}),
    });
    this.#d.watch.changed(this.#buildId);
  }
}
