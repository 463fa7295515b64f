import { join } from 'node:path';
import { KilnError } from '../../core/errors.ts';
import { writeFileAtomic } from '../../core/fs-atomic.ts';
import { validateName } from '../../core/validate.ts';
import { AGENT_PORT, LEGACY_MACHINE, type Endpoint, type VmInfo, type VmState } from '../driver.ts';
import type { Accel } from './accel.ts';
import { ioError, isAbsent, type HostIo } from './host-io.ts';
import type { QemuVm } from './plan.ts';

/** The files of a VM's runtime directory `<runDir>/<id>/`. */
export const FILES = {
  record: 'vm.json',
  overlay: 'overlay.qcow2',
  qmp: 'qmp.sock',
  serial: 'serial.log',
  pid: 'qemu.pid',
} as const;

/** What a VM's directory records so that a later process can re-attach (`vm.json`). */
export interface VmRecord {
  id: string;
  pid: number;
  /** /proc/PID/stat start time: guards against a recycled pid. */
  pidStartTime: number;
  accel: Accel;
  /** Host address of the forwards; records written before it existed forwarded on 127.0.0.1. */
  hostAddr?: string;
  /** Guest port -> forwarded host port on `hostAddr`. */
  ports: Record<number, number>;
  startedAt: string;
  spec: QemuVm;
  /** The overlay the VM writes to, relative to its directory (FILES.overlay until a freeze). */
  overlay?: string;
}

/** Where the VMs of one run directory live, and how the driver reads the host. */
export interface RunDir {
  runDir: string;
  io: HostIo;
}

export const vmDir = (r: RunDir, id: string): string => join(r.runDir, id);

/**
 * The VM's record. `not_found` (from `notFound`) only when it does not exist (ENOENT); any other
 * read error (EMFILE, EACCES, EIO) is a `driver_error`: it says nothing about whether the VM lives.
 */
export async function readRecord(
  r: RunDir,
  id: string,
  notFound: (id: string) => Promise<KilnError>,
): Promise<VmRecord> {
  validateName('id', id);
  const path = join(vmDir(r, id), FILES.record);
  let text: string;
  try {
    text = await r.io.readFile(path);
  } catch (e) {
    if (!isAbsent(e)) throw ioError(`reading VM ${id}'s record ${path}`, e);
    throw await notFound(id);
  }
  try {
    return JSON.parse(text) as VmRecord;
  } catch (e) {
    throw new KilnError('driver_error', `VM ${id}'s record ${path} is damaged: ${(e as Error).message}`, {
      cause: e,
    });
  }
}

export function writeRecord(r: RunDir, rec: VmRecord): Promise<void> {
  return writeFileAtomic(join(vmDir(r, rec.id), FILES.record), JSON.stringify(rec, null, 2));
}

/** The neutral facts of a recorded VM. */
export function infoOf(r: RunDir, rec: VmRecord, state: VmState, fault?: VmInfo['fault']): VmInfo {
  const host = rec.hostAddr ?? '127.0.0.1';
  const endpoints: Record<number, Endpoint> = {};
  for (const [guest, port] of Object.entries(rec.ports)) endpoints[Number(guest)] = { host, port };
  const dir = vmDir(r, rec.id);
  return {
    ...(fault ? { fault } : {}),
    id: rec.id,
    state,
    pid: rec.pid,
    accel: rec.accel,
    machine: rec.spec.machine ?? LEGACY_MACHINE,
    agent: endpoints[AGENT_PORT] ?? { host, port: 0 },
    endpoints,
    dir,
    overlay: join(dir, rec.overlay ?? FILES.overlay),
    serialLog: join(dir, FILES.serial),
    startedAt: rec.startedAt,
    ...(rec.spec.netns ? { namespace: rec.spec.netns.path } : {}),
  };
}

/** A console line without terminal escapes and control characters. */
export function printable(line: string): string {
  /* eslint-disable no-control-regex -- removing control characters is the point */
  return line
    .replace(/\u001b\[[0-9;?]*[A-Za-z]/g, '')
    .replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, '')
    .trimEnd();
  /* eslint-enable no-control-regex */
}

/** The last `maxLines` printable lines of VM `id`'s console log; `not_found` when it has no directory. */
export async function consoleTail(r: RunDir, id: string, maxLines: number): Promise<string[]> {
  validateName('id', id);
  const path = join(vmDir(r, id), FILES.serial);
  let text: string;
  try {
    text = await r.io.readTail(path, 64 * 1024);
  } catch (e) {
    if (!isAbsent(e)) throw ioError(`reading VM ${id}'s console log ${path}`, e);
    if (!(await dirExists(r, id))) throw new KilnError('not_found', `VM ${id} does not exist`);
    return [];
  }
  return text
    .split(/\r?\n/)
    .map(printable)
    .filter((l) => l !== '')
    .slice(-maxLines);
}

export async function dirExists(r: RunDir, id: string): Promise<boolean> {
  try {
    return await r.io.exists(vmDir(r, id));
  } catch (e) {
    throw ioError(`looking for VM ${id}'s directory`, e);
  }
}
