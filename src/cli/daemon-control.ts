import { spawn } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KilnError } from '../core/errors.ts';
import { KilnClient } from '../sdk/client.ts';

/** kilnd's entry file: started by path, so the CLI does not import the daemon's layers. */
export const KILND_MAIN = fileURLToPath(new URL('../api/main.ts', import.meta.url));

export const socketPathOf = (stateDir: string): string => join(stateDir, 'kilnd.sock');

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function answers(c: KilnClient): Promise<boolean> {
  return c.health().then(
    () => true,
    () => false,
  );
}

/**
 * A client of the running daemon, starting one in the background first when none answers
 * (banger's behaviour). Its log goes to <state>/kilnd.log.
 */
export async function connectOrStart(stateDir: string, say: (s: string) => void): Promise<KilnClient> {
  const c = new KilnClient({ socketPath: socketPathOf(stateDir) });
  if (await answers(c)) return c;
  await startDetached(stateDir, say);
  return c;
}

export async function startDetached(stateDir: string, say: (s: string) => void): Promise<void> {
  const c = new KilnClient({ socketPath: socketPathOf(stateDir) });
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const logPath = join(stateDir, 'kilnd.log');
  // The log may name sandboxes and keys' ids: private like the rest of the state dir.
  const fd = openSync(logPath, 'a', 0o600);
  say(`starting kilnd in the background (log: ${logPath})`);
  const child = spawn(process.execPath, [KILND_MAIN], {
    detached: true,
    stdio: ['ignore', fd, fd],
  });
  child.unref();
  const t0 = Date.now();
  while (!(await answers(c))) {
    if (child.exitCode !== null || Date.now() - t0 > 120_000) {
      const tail = readFileSync(logPath, 'utf8').split('\n').slice(-15).join('\n');
      throw new Error(`kilnd did not start; the end of ${logPath}:\n${tail}`);
    }
    await sleep(100);
  }
}

/** Whether process `pid` exists (a zombie not yet reaped counts). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Stops the daemon of this state dir: SIGTERM, then waits for it to be gone. kilnd closes its
 * socket first and then tears down what it holds (network slots, listeners), so a quiet socket is
 * not enough: whoever stops it and then touches the state dir or the host's namespaces (tests,
 * a restart) must find nothing of it still working. `timeout` when it lives on past `waitMs`.
 */
export async function stopDaemon(stateDir: string, waitMs = 60_000): Promise<boolean> {
  let pid: number;
  try {
    pid = Number(readFileSync(join(stateDir, 'kilnd.pid'), 'utf8').trim());
  } catch {
    return false;
  }
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return false;
  }
  const t0 = Date.now();
  while (alive(pid)) {
    if (Date.now() - t0 > waitMs)
      throw new KilnError(
        'timeout',
        `kilnd (pid ${pid}) is still shutting down ${Math.round(waitMs / 1000)} s after SIGTERM; see ${join(stateDir, 'kilnd.log')}`,
      );
    await sleep(100);
  }
  return true;
}
