/** A pino logger whose lines are kept as objects, for tests that check what was logged. */
import { createLogger } from '../../src/core/log.ts';

type Line = Record<string, unknown>;

/** Log lines as objects, for checking what was logged at which level; `waitFor` a line to come. */
export function captureLog(): {
  log: ReturnType<typeof createLogger>;
  lines: Line[];
  waitFor: (pred: (l: Line) => boolean) => Promise<Line>;
} {
  const lines: Line[] = [];
  const waiting: { pred: (l: Line) => boolean; resolve: (l: Line) => void }[] = [];
  const log = createLogger({
    level: 'debug',
    destination: {
      write: (s: string) => {
        const l = JSON.parse(s) as Line;
        lines.push(l);
        for (const w of [...waiting])
          if (w.pred(l)) {
            waiting.splice(waiting.indexOf(w), 1);
            w.resolve(l);
          }
      },
    },
  });
  return {
    log,
    lines,
    waitFor: (pred) => new Promise((resolve) => waiting.push({ pred, resolve })),
  };
}
