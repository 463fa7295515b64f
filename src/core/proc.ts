import { readFileSync } from 'node:fs';

/** True when a process with this pid exists (zombies count as gone). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  const st = procStat(pid);
  return st !== undefined && st.state !== 'Z' && st.state !== 'X';
}

/** State letter and start time (clock ticks since boot) from /proc/PID/stat, or undefined. */
export function procStat(pid: number): { state: string; startTime: number } | undefined {
  let s: string;
  try {
    s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
  const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
  const state = rest[0] ?? '?';
  const startTime = Number(rest[19]);
  return { state, startTime };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls until the pid is gone or the time is up; returns true when it is gone. */
export async function waitPidExit(pid: number, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (pidAlive(pid)) {
    if (Date.now() >= end) return false;
    await sleep(20);
  }
  return true;
}
