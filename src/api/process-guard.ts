/**
 * kilnd's last line of defence: an exception no one caught, or a promise rejection no one
 * handled, is logged and kilnd keeps serving. Requests cannot get here (each listener and the
 * router are error boundaries), so what does is a background task (a timer, an event handler)
 * that failed half-way; the journal (OpRun) and start-up reconciliation exist for exactly that,
 * and taking the daemon down would cut every client for one failed task. A storm of them (more
 * than `maxPerMinute`) means something is broken for good: kilnd then stops cleanly (VMs keep
 * running and are re-adopted at the next start) rather than loop on it.
 */
import type { Logger } from 'pino';

export interface ProcessGuardOpts {
  log: Logger;
  /** Called once when the storm limit is passed: stop the daemon cleanly. */
  onStorm: () => void;
  /** Failures within a minute that are tolerated (default 10). */
  maxPerMinute?: number;
  now?: () => number;
}

export interface ProcessGuard {
  uncaughtException: (e: unknown) => void;
  unhandledRejection: (reason: unknown) => void;
}

/** The two handlers, not yet registered (see {@link installProcessGuard}). */
export function processGuard(o: ProcessGuardOpts): ProcessGuard {
  const max = o.maxPerMinute ?? 10;
  const now = o.now ?? Date.now;
  const recent: number[] = [];
  let stormed = false;
  const record = (what: string, e: unknown): void => {
    const t = now();
    recent.push(t);
    while (recent.length > 0 && (recent[0] ?? t) <= t - 60_000) recent.shift();
    try {
      o.log.error({ err: e, recent: recent.length }, `${what}; kilnd keeps serving`);
    } catch {
      // The log itself is failing (a full disk, a closed stderr): nothing more to do about it here.
    }
    if (recent.length > max && !stormed) {
      stormed = true;
      try {
        o.log.fatal({ count: recent.length }, `more than ${max} uncaught failures in a minute; kilnd stops`);
      } catch {
        // as above
      }
      o.onStorm();
    }
  };
  return {
    uncaughtException: (e) => {
      record('uncaught exception', e);
    },
    unhandledRejection: (reason) => {
      record('unhandled promise rejection', reason);
    },
  };
}

/** Registers the guard on `process`; returns a function that removes it. */
export function installProcessGuard(o: ProcessGuardOpts): () => void {
  const g = processGuard(o);
  process.on('uncaughtException', g.uncaughtException);
  process.on('unhandledRejection', g.unhandledRejection);
  return () => {
    process.off('uncaughtException', g.uncaughtException);
    process.off('unhandledRejection', g.unhandledRejection);
  };
}
