/** Reading a guest's console: why its VM ended, and the lines worth keeping. */

/**
 * How many console lines are searched for why a VM ended: a panic's stack dump follows its
 * "Kernel panic" line (some 40 lines), and the VM exits right after it.
 */
export const CONSOLE_LINES = 200;

export const panicLine = (l: string): boolean => l.includes('Kernel panic - not syncing');

/**
 * Why a VM ended, from the last lines of its console: the kernel's panic line when there is one
 * (an agent that died, a kernel that crashed), else the last line the guest wrote.
 */
export function exitReason(consoleLines: string[]): string {
  const panic = consoleLines.findLast(panicLine);
  if (panic) return `vm exited: ${panic.slice(panic.indexOf('Kernel panic')).slice(0, 300)}`;
  const last = consoleLines.at(-1);
  return last ? `vm exited; the guest's last console line: ${last.slice(0, 300)}` : 'vm exited';
}

/** The console lines an exit event keeps: around the panic (what led to it), else the last 30. */
export function consoleExcerpt(consoleLines: string[]): string[] {
  const i = consoleLines.findLastIndex(panicLine);
  return i < 0 ? consoleLines.slice(-30) : consoleLines.slice(Math.max(0, i - 15), i + 25);
}
