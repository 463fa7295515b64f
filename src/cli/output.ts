/**
 * How the CLI prints: tables for people, `--json` for programs, credentials hidden, and one rule
 * for exit codes. No side effects at import.
 */
import { constants } from 'node:os';

/** Prints rows under a header, columns padded to the widest cell. */
export function table(head: string[], rows: string[][]): void {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string =>
    r
      .map((c, i) => c.padEnd(w[i] ?? 0))
      .join('  ')
      .trimEnd();
  console.log(line(head));
  for (const r of rows) console.log(line(r));
}

/** Field names that hold credentials (`envdAccessToken`...); `ownerKeyId` is an id, not a secret. */
const SECRET_FIELD = /token|secret|password/i;

/** A copy of `v` without its credential fields, unless `show` asks for them. */
export function redact<T extends object>(v: T, show = false): Partial<T> {
  if (show) return v;
  return Object.fromEntries(Object.entries(v).filter(([k]) => !SECRET_FIELD.test(k))) as Partial<T>;
}

// Go's os.ProcessState wording (what envd, and kiln's guest agent, report in `status`).
const GO_SIGNAL_TEXT: Record<string, NodeJS.Signals> = {
  killed: 'SIGKILL',
  terminated: 'SIGTERM',
  interrupt: 'SIGINT',
  hangup: 'SIGHUP',
  quit: 'SIGQUIT',
  'broken pipe': 'SIGPIPE',
  aborted: 'SIGABRT',
  'segmentation fault': 'SIGSEGV',
  'user defined signal 1': 'SIGUSR1',
  'user defined signal 2': 'SIGUSR2',
  'alarm clock': 'SIGALRM',
};

/** The shell's convention for a process killed by a signal: 128 + its number. */
export function signalExitCode(signal: string): number {
  const n = (constants.signals as Record<string, number | undefined>)[signal];
  return 128 + (n ?? constants.signals.SIGKILL);
}

/**
 * The exit code for a command run in a sandbox: its own code, or 128+N when signal N ended it
 * (the guest reports exitCode -1 and `status: "signal: killed"`); an unknown signal counts as
 * SIGKILL (137).
 */
export function commandExitCode(r: { exitCode: number; status: string }): number {
  if (r.exitCode >= 0) return r.exitCode;
  const text = /^signal: (.+)$/.exec(r.status)?.[1] ?? 'killed';
  return signalExitCode(GO_SIGNAL_TEXT[text] ?? text);
}

/** The exit code for a local child process (`kiln daemon`), by the same rule. */
export function childExitCode(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  return signal ? signalExitCode(signal) : 1;
}

/** Bytes as MiB with one decimal. */
export const mib = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;
