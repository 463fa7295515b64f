import type { Logger } from 'pino';

/**
 * Undo-on-failure for multi-step operations (E2B infra's cleanup pattern): each step that changed
 * something registers how to take it back; on failure `unwind` runs them newest first. Undo steps
 * are never cancelled by the caller's abort signal, and one failing undo does not stop the rest.
 */
export class UndoStack {
  readonly #steps: { name: string; fn: () => Promise<void> | void }[] = [];

  push(name: string, fn: () => Promise<void> | void): void {
    this.#steps.push({ name, fn });
  }

  /** Forgets every step: the operation succeeded. */
  commit(): void {
    this.#steps.length = 0;
  }

  /** Runs every undo step, newest first; returns the errors of those that failed. */
  async unwind(log?: Logger): Promise<Error[]> {
    const errors: Error[] = [];
    while (this.#steps.length > 0) {
      const step = this.#steps.pop();
      if (!step) break;
      try {
        await step.fn();
      } catch (e) {
        const err = e instanceof Error ? e : new Error(String(e));
        errors.push(err);
        log?.warn({ step: step.name, err }, 'undo step failed');
      }
    }
    return errors;
  }
}
