import { KilnError } from '../core/errors.ts';

/**
 * Per-key mutual exclusion: operations on one sandbox run one at a time, operations on
 * different sandboxes run concurrently. `tryRun` refuses at once instead of waiting (for
 * operations that make no sense queued, such as a second kill).
 */
export class KeyedLock {
  readonly #tails = new Map<string, Promise<unknown>>();
  readonly #held = new Set<string>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(key) ?? Promise.resolve();
    let release: () => void = () => undefined;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.#tails.set(key, tail);
    await prev.catch(() => undefined);
    this.#held.add(key);
    try {
      return await fn();
    } finally {
      this.#held.delete(key);
      release();
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    }
  }

  /** Runs `fn` only if nothing holds or awaits the key; `conflict` otherwise. */
  async tryRun<T>(key: string, what: string, fn: () => Promise<T>): Promise<T> {
    if (this.#tails.has(key))
      throw new KilnError('conflict', `${what}: another operation on ${key} is in progress; retry later`);
    return this.run(key, fn);
  }

  isHeld(key: string): boolean {
    return this.#held.has(key);
  }
}
