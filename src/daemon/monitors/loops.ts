import type { Logger } from 'pino';
import { STATS_EVERY_MS } from '../sandbox/types.ts';

export interface LoopOpts {
  reapEveryMs?: number;
  livenessEveryMs?: number;
  flattenEveryMs?: number;
}

/** The background work of the service, each run by its own timer. */
export interface LoopTasks {
  reap: () => Promise<unknown>;
  liveness: () => Promise<unknown>;
  sampleStats: () => Promise<unknown>;
  flatten: () => Promise<unknown>;
}

/**
 * Starts the reaper, the liveness watcher, the stats sampler and chain flattening; returns the
 * timers (unref'd: they never keep the process alive). A task still running when its timer
 * fires again is skipped, except liveness, which keeps track of its own checks.
 */
export function startLoops(log: Logger, tasks: LoopTasks, opts: LoopOpts): NodeJS.Timeout[] {
  const loop = (ms: number, fn: () => Promise<unknown>): NodeJS.Timeout => {
    let busy = false;
    const t = setInterval(() => {
      if (busy) return;
      busy = true;
      fn()
        .catch((e: unknown) => {
          log.warn({ err: e }, 'background task failed');
        })
        .finally(() => {
          busy = false;
        });
    }, ms);
    t.unref();
    return t;
  };
  const timers = [loop(opts.reapEveryMs ?? 1000, tasks.reap)];
  // No busy guard: the watcher skips sandboxes still being checked, so one hung VM never
  // delays the others.
  const liveness = setInterval(() => {
    tasks.liveness().catch((e: unknown) => {
      log.warn({ err: e }, 'liveness check failed');
    });
  }, opts.livenessEveryMs ?? 1000);
  liveness.unref();
  timers.push(liveness);
  timers.push(loop(STATS_EVERY_MS, tasks.sampleStats));
  timers.push(loop(opts.flattenEveryMs ?? 30_000, tasks.flatten));
  return timers;
}
