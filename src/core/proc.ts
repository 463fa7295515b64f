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
  return parseProcStat(s);
}

/** State letter and start time from the text of /proc/PID/stat. */
export function parseProcStat(s: string): { state: string; startTime: number } {
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

/** Clock ticks a second in /proc's CPU times (USER_HZ: 100 on every Linux kiln runs on). */
export const CLOCK_TICKS_PER_S = 100;

export interface ProcUsage {
  /** User + system CPU time in clock ticks (CLOCK_TICKS_PER_S a second). */
  cpuTicks: number;
  rssBytes: number;
  /** Proportional set size: shared pages (a template's RAM) divided among their users. */
  pssBytes: number;
}

/** CPU time and RSS of a process from /proc (cheap), or undefined when it is gone. */
export function procCpuRss(pid: number): Omit<ProcUsage, 'pssBytes'> | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    const cpuTicks = Number(f[11]) + Number(f[12]);
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rssBytes = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0) * 1024;
    return { cpuTicks, rssBytes };
  } catch {
    return undefined;
  }
}

/**
 * A process's PSS from /proc/<pid>/smaps_rollup, or undefined (gone, or an older kernel). Costly
 * for a VM: the kernel walks every page table of its RAM mapping (some 3 ms for a 512 MiB TCG
 * guest), so callers that poll should do it rarely.
 */
export function procPss(pid: number): number | undefined {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** CPU time and memory of a process from /proc, or undefined when it is gone. */
export function procUsage(pid: number): ProcUsage | undefined {
  const u = procCpuRss(pid);
  // PSS falls back to RSS where smaps_rollup cannot be read.
  return u ? { ...u, pssBytes: procPss(pid) ?? u.rssBytes } : undefined;
}

/** CPU time (user + system, ms) a process has used, or undefined when it is gone. */
export function procCpuMs(pid: number): number | undefined {
  const u = procCpuRss(pid);
  return u && (u.cpuTicks * 1000) / CLOCK_TICKS_PER_S;
}
