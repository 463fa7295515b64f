import { writeSync } from 'node:fs';
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

export interface LoggerOpts {
  level?: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'silent';
  /** Where JSON lines go; stderr (through {@link fdDestination}) by default. Tests pass a stream to capture lines. */
  destination?: DestinationStream;
  /** Fields carried on every line (e.g. `{ component: 'qemu' }`). */
  bindings?: Record<string, unknown>;
}

/** How often a write that the kernel refuses for now (EAGAIN: a full pipe) is tried again. */
const EAGAIN_TRIES = 100;

/** A log destination that never throws, and counts the lines it had to drop. */
export interface FdDestination extends DestinationStream {
  /** Lines dropped so far because the log could not be written (ENOSPC, EPIPE, EIO ...). */
  readonly dropped: number;
}

/**
 * Writes JSON lines to a file descriptor synchronously and survives the destination failing: a
 * full disk (ENOSPC), a reader that went away (EPIPE), any error drops the line instead of
 * throwing or emitting an `error` that would end the process (kilnd's detached log lives in the
 * state dir, which can fill up). The first line that gets through again is preceded by one
 * saying how many were lost and why.
 */
export function fdDestination(fd: number, write: typeof writeSync = writeSync): FdDestination {
  let dropped = 0;
  let lastError = '';
  const writeAll = (s: string): void => {
    let buf = Buffer.from(s);
    for (let tries = 0; buf.length > 0;) {
      try {
        buf = buf.subarray(write(fd, buf));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN' || ++tries >= EAGAIN_TRIES) throw e;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
      }
    }
  };
  return {
    get dropped() {
      return dropped;
    },
    write(line: string): void {
      try {
        if (dropped > 0) {
          writeAll(
            JSON.stringify({
              level: 40,
              time: new Date().toISOString(),
              msg: `${dropped} log lines were lost: the log could not be written (${lastError})`,
            }) + '\n',
          );
          dropped = 0;
        }
        writeAll(line);
      } catch (e) {
        dropped++;
        lastError = (e as NodeJS.ErrnoException).code ?? String(e);
      }
    },
  };
}

/**
 * kiln logs JSON lines through pino. Request-scoped fields (`opId`, `vmId`) ride on child
 * loggers: `log.child({ opId })`, so every line of one operation can be found by its op id.
 */
export function createLogger(opts: LoggerOpts = {}): Logger {
  const base = pino(
    { level: opts.level ?? 'info', base: null, timestamp: pino.stdTimeFunctions.isoTime },
    opts.destination ?? fdDestination(2),
  );
  return opts.bindings ? base.child(opts.bindings) : base;
}

/** A logger that drops everything, for library calls that were given none. */
export const nullLogger: Logger = pino({ level: 'silent' });
