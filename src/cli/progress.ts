/** A byte counter on one stderr line for people at a terminal (nothing when stderr is not one). */
import { mib } from './output.ts';

export interface Progress {
  update: (bytes: number) => void;
  /** Clears the line. */
  done: () => void;
}

export function progress(label: string, tty = process.stderr.isTTY): Progress {
  if (!tty) return { update: () => undefined, done: () => undefined };
  let last = 0;
  let shown = false;
  return {
    update: (bytes) => {
      const now = Date.now();
      if (now - last < 100) return;
      last = now;
      shown = true;
      process.stderr.write(`\r${label} ${mib(bytes)}\x1b[K`);
    },
    done: () => {
      if (shown) process.stderr.write('\r\x1b[K');
    },
  };
}
