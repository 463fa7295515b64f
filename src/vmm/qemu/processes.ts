import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { KilnError } from '../../core/errors.ts';
import { parseProcStat, sleep } from '../../core/proc.ts';
import { ioError, isAbsent, type HostIo } from './host-io.ts';
import { FILES } from './record.ts';

/** What finding and ending QEMU processes needs. */
export interface ProcScope {
  runDir: string;
  qemuBinary: string;
  io: HostIo;
}

export interface QemuProcess {
  id: string;
  pid: number;
  startTime: number;
}

/**
 * Whether `pid` is still the process that was recorded (same start time; 0 = any). False only
 * on a positive observation: no such process, a zombie, another start time (a recycled pid).
 * A /proc read that fails otherwise throws a `driver_error`.
 */
export function procAlive(io: HostIo, pid: number, startTime: number, id: string): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false; // ESRCH: no such process
  }
  let text: string;
  try {
    text = io.readFileSync(`/proc/${pid}/stat`);
  } catch (e) {
    if (isAbsent(e)) return false;
    throw ioError(`checking VM ${id}'s QEMU process ${pid} (/proc/${pid}/stat)`, e);
  }
  const st = parseProcStat(text);
  if (st.state === 'Z' || st.state === 'X') return false;
  return startTime === 0 || st.startTime === startTime;
}

/** /proc/PID/stat's start time of a process just started (0 when it is already gone). */
export function procStartTime(io: HostIo, pid: number): number {
  try {
    return parseProcStat(io.readFileSync(`/proc/${pid}/stat`)).startTime;
  } catch (e) {
    if (isAbsent(e)) return 0;
    throw ioError(`reading /proc/${pid}/stat of a new QEMU`, e);
  }
}

/** Polls until the process is gone (true) or the time is up (false). */
export async function waitGone(
  io: HostIo,
  p: { pid: number; startTime: number; id: string },
  timeoutMs: number,
): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (procAlive(io, p.pid, p.startTime, p.id)) {
    if (Date.now() >= end) return false;
    await sleep(20);
  }
  return true;
}

export function killQuiet(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** SIGKILLs one process and waits for it; `driver_error` when it survives. */
export async function killAndWait(
  io: HostIo,
  p: { pid: number; startTime: number; id: string },
): Promise<void> {
  killQuiet(p.pid);
  if (!(await waitGone(io, p, 5000)))
    throw new KilnError('driver_error', `QEMU pid ${p.pid} of VM ${p.id} survived SIGKILL`);
}

/** One /proc entry's QEMU VM of this run dir, or undefined (not QEMU, not ours, gone). */
function vmOfProc(s: ProcScope, ent: string, onlyId?: string): QemuProcess | undefined {
  let argv: string[];
  let stat: string;
  try {
    argv = s.io.readFileSync(`/proc/${ent}/cmdline`).split('\0');
    if (basename(argv[0] ?? '') !== basename(s.qemuBinary)) return undefined;
    stat = s.io.readFileSync(`/proc/${ent}/stat`);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (isAbsent(e) || code === 'EACCES' || code === 'EPERM') return undefined; // gone, or not ours
    throw ioError(`reading /proc/${ent}`, e);
  }
  const arg = (flag: string): string | undefined => {
    const i = argv.indexOf(flag);
    return i < 0 ? undefined : argv[i + 1];
  };
  const name = arg('-name');
  if (!name?.startsWith('kiln-')) return undefined;
  const id = name.slice('kiln-'.length);
  if (onlyId !== undefined && id !== onlyId) return undefined;
  const pidFile = arg('-pidfile');
  if (pidFile === undefined || resolve(pidFile) !== join(resolve(s.runDir), id, FILES.pid)) return undefined;
  const st = parseProcStat(stat);
  if (st.state === 'Z' || st.state === 'X') return undefined;
  return { id, pid: Number(ent), startTime: st.startTime };
}

/**
 * Live QEMU processes of THIS run directory, found by their command line: `-name kiln-<id>`
 * and `-pidfile <runDir>/<id>/qemu.pid` (so another daemon's or test's VMs never match), run
 * by this driver's QEMU binary. Works when the VM's directory is gone.
 */
export async function findProcesses(s: ProcScope, onlyId?: string): Promise<QemuProcess[]> {
  let entries: string[];
  try {
    entries = await s.io.readdir('/proc');
  } catch (e) {
    throw ioError('listing processes (/proc)', e);
  }
  const out: QemuProcess[] = [];
  for (const ent of entries) {
    if (!/^\d+$/.test(ent)) continue;
    const p = vmOfProc(s, ent, onlyId);
    if (p) out.push(p);
  }
  return out;
}

/** SIGKILLs every process of VM `id` found by command line; throws unless all are gone. */
export async function killProcesses(s: ProcScope, id: string): Promise<number[]> {
  const live = await findProcesses(s, id);
  for (const p of live) killQuiet(p.pid);
  for (const p of live) {
    if (!(await waitGone(s.io, p, 5000)))
      throw new KilnError('driver_error', `QEMU pid ${p.pid} of VM ${id} survived SIGKILL`);
  }
  return live.map((p) => p.pid);
}

function readPid(pidFile: string): Promise<number> {
  return readFile(pidFile, 'utf8').then(
    (s) => {
      const pid = Number(s.trim());
      if (!Number.isInteger(pid) || pid <= 0)
        throw new KilnError('driver_error', `bad QEMU pid file: "${s}"`);
      return pid;
    },
    (e: unknown) => {
      throw new KilnError('driver_error', `QEMU started but wrote no pid file`, { cause: e });
    },
  );
}

/** Spawns QEMU with -daemonize; resolves with the daemon's pid once the parent exited 0. */
export function spawnDaemon(
  qemuBinary: string,
  args: string[],
  pidFile: string,
  netns?: string,
): Promise<number> {
  return new Promise((resolve, reject) => {
    // In a network namespace: util-linux nsenter enters it and execs QEMU (same process).
    const [cmd, argv] = netns
      ? ['nsenter', [`--net=${netns}`, '--', qemuBinary, ...args]]
      : [qemuBinary, args];
    const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.stdout.resume();
    child.on('error', (e: NodeJS.ErrnoException) => {
      reject(
        e.code === 'ENOENT'
          ? new KilnError('missing_tool', `${qemuBinary} is not installed (apt-get install qemu-system-x86)`)
          : new KilnError('driver_error', `spawning QEMU: ${e.message}`, { cause: e }),
      );
    });
    child.on('close', (code) => {
      if (code !== 0)
        reject(
          new KilnError('driver_error', `QEMU failed to start (exit ${code}): ${err.trim().slice(-2000)}`),
        );
      else readPid(pidFile).then(resolve, reject);
    });
  });
}
