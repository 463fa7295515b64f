import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

export interface LoggerOpts {
  level?: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'silent';
  /** Where JSON lines go; stderr by default. Tests pass a stream to capture lines. */
  destination?: DestinationStream;
  /** Fields carried on every line (e.g. `{ component: 'qemu' }`). */
  bindings?: Record<string, unknown>;
}

/**
 * kiln logs JSON lines through pino. Request-scoped fields (`opId`, `vmId`) ride on child
 * loggers: `log.child({ opId })`, so every line of one operation can be found by its op id.
 */
export function createLogger(opts: LoggerOpts = {}): Logger {
  const base = pino(
    { level: opts.level ?? 'info', base: null, timestamp: pino.stdTimeFunctions.isoTime },
    opts.destination ?? pino.destination({ fd: 2, sync: true }),
  );
  return opts.bindings ? base.child(opts.bindings) : base;
}

/** A logger that drops everything, for library calls that were given none. */
export const nullLogger: Logger = pino({ level: 'silent' });
