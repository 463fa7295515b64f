import type { Logger } from 'pino';
import { STATS_EVERY_MS } from '../sandbox/types.ts';
import { DEFAULT_RETENTION_S } from './retention.ts';

/** How often ended records past their retention are purged. */
export const PURGE_EVERY_MS = 3600_000;

export interface LoopOpts {
  reapEveryMs?: number;
  livenessEveryMs?: number;
  flattenEveryMs?: number;
  /** How often the warm pool is checked and refilled besides after takes (default 5000). */
  warmPoolEveryMs?: number;
  /** How long ended sandboxes' records are kept (ms; default 7 days): see retention.ts. */
  retentionMs?: number;
}

/** The background work of the service, each run by its own timer. */
export interface LoopTasks {
  reap: () => Promise<unknown>;
  liveness: () => Promise<unknown>;
  sampleStats: () => Promise<unknown>;
  flatten: () => Promise<unknown>;
  /** Purges records that ended more than `retentionMs` ago. */
  purge: (retentionMs: number) => Promise<unknown>;
}

/**
 * Runs `fn` every `ms` on an unref'd timer (it never keeps the process alive); a run still
 * going when the timer fires again is skipped; a failure is logged. Every background task of
 * kilnd runs so (also template garbage collection, daemon/templates/gc.ts).
 */
export function every(log: Logger, ms: number, fn: () => Promise<unknown>): NodeJS.Timeout {
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
}

/**
 * Starts the reaper, the liveness watcher, the stats sampler, chain flattening and the
 * retention purge (at once, then hourly); returns the
 * timers (unref'd: they never keep the process alive). A task still running when its timer
 * fires again is skipped, except liveness, which keeps track of its own checks.
 */
export function startLoops(log: Logger, tasks: LoopTasks, opts: LoopOpts): NodeJS.Timeout[] {
  const loop = (ms: number, fn: () => Promise<unknown>): NodeJS.Timeout => every(log, ms, fn);
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
  const purge = (): Promise<unknown> => tasks.purge(opts.retentionMs ?? DEFAULT_RETENTION_S * 1000);
  timers.push(loop(PURGE_EVERY_MS, purge));
  purge().catch((e: unknown) => {
    log.warn({ err: e }, 'purging ended records failed');
  });
  return timers;
}
