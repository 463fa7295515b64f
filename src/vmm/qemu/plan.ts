import { stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { KilnError, invalidArgument } from '../../core/errors.ts';
import { validateMemoryMiB, validateName, validateVcpus } from '../../core/validate.ts';
import { AGENT_PORT, MACHINE_REVISION, validateMachine, type VmSpec } from '../driver.ts';
import { hostMemoryMiB } from './host.ts';
import { FILES } from './record.ts';

/**
 * A VM in QEMU's terms: what the neutral `VmSpec` becomes on this driver. Stored in the VM's
 * record (field `spec`); records of older kilnds hold the same field names for the parts read
 * back (`memoryFile`).
 */
export interface QemuVm {
  id: string;
  kernel: string;
  initrd: string;
  kernelArgs?: string[];
  memoryMiB: number;
  vcpus: number;
  /** The machine revision (see `MACHINE_REVISION`); absent in records of older kilnds: legacy. */
  machine?: number;
  /** Guest TCP ports forwarded to the host; the agent's first. */
  guestPorts: number[];
  /** User-net `restrict=on`: no egress; the host forwards still work. */
  restrict: boolean;
  /** Runs inside this network namespace (path) and forwards guest ports on its `address`. */
  netns?: { path: string; address: string };
  /** The image the VM's qcow2 overlay sits on: the raw rootfs or a qcow2 disk layer. */
  backing: { path: string; format: 'raw' | 'qcow2' };
  /**
   * Guest RAM in a file: `share` writes guest memory to it (a VM whose RAM becomes a snapshot's);
   * private (`share: false`) maps it copy-on-write (restores of that snapshot).
   */
  memoryFile?: { path: string; share: boolean };
  /** Restore: load device state from this file (`-incoming defer` + migrate-incoming). */
  incoming?: { stateFile: string; ramInStream: boolean; stayPaused: boolean };
}

// sun_path is 108 bytes including the NUL.
const MAX_SOCKET_PATH = 107;

/** The QEMU shape of a neutral spec (no checks: see `validateSpec`). */
export function planVm(spec: VmSpec): QemuVm {
  const snap = spec.restore?.snapshot;
  const memoryFile = snap?.ramFile
    ? { path: snap.ramFile, share: false }
    : spec.ramFile
      ? { path: spec.ramFile, share: true }
      : spec.privateRamFile && !snap
        ? { path: spec.privateRamFile, share: false }
        : undefined;
  const ports = [AGENT_PORT, ...(spec.network.guestPorts ?? []).filter((p) => p !== AGENT_PORT)];
  return {
    id: spec.id,
    kernel: spec.boot.kernel,
    initrd: spec.boot.initrd,
    ...(spec.boot.kernelArgs ? { kernelArgs: spec.boot.kernelArgs } : {}),
    memoryMiB: spec.resources.memoryMiB,
    vcpus: spec.resources.vcpus,
    machine: spec.machine ?? MACHINE_REVISION,
    guestPorts: ports,
    restrict: spec.network.kind === 'restricted',
    ...(spec.network.namespace ? { netns: { ...spec.network.namespace } } : {}),
    backing: spec.diskLayer
      ? { path: spec.diskLayer, format: 'qcow2' }
      : { path: spec.boot.rootfs, format: 'raw' },
    ...(memoryFile ? { memoryFile } : {}),
    ...(snap
      ? {
          incoming: {
            stateFile: snap.stateFile,
            ramInStream: snap.ramFile === undefined,
            stayPaused: spec.restore?.paused === true,
          },
        }
      : {}),
  };
}

async function needFile(field: string, path: string, hint = ''): Promise<void> {
  if (!path.startsWith('/')) throw invalidArgument(field, `must be an absolute path, got "${path}"`);
  if (!(await stat(path).catch(() => undefined))?.isFile())
    throw new KilnError('not_found', `${field} ${path} does not exist${hint}`, { details: { field, path } });
}

/** Refuses a spec this driver cannot run, naming the field; touches nothing. */
export async function validateSpec(spec: VmSpec, runDir: string): Promise<void> {
  validateName('id', spec.id);
  validateMemoryMiB(spec.resources.memoryMiB);
  validateVcpus(spec.resources.vcpus);
  validateMachine(spec.machine);
  const hostMem = hostMemoryMiB();
  if (hostMem > 0 && spec.resources.memoryMiB > hostMem)
    throw invalidArgument('memoryMiB', `${spec.resources.memoryMiB} MiB exceeds this host's ${hostMem} MiB`);
  const kinds: readonly string[] = ['restricted', 'open'];
  if (!kinds.includes(spec.network.kind))
    throw invalidArgument('network.kind', `must be restricted or open, got "${spec.network.kind}"`);
  const ns = spec.network.namespace;
  if (ns !== undefined) {
    if (!/^\/[\w./-]+$/.test(ns.path) || ns.path.includes('..'))
      throw invalidArgument('network.namespace.path', `must be an absolute path, got "${ns.path}"`);
    if (!(await stat(ns.path).catch(() => undefined)))
      throw new KilnError('not_found', `network.namespace.path ${ns.path} does not exist`);
    if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(ns.address))
      throw invalidArgument('network.namespace.address', `must be an IPv4 address, got "${ns.address}"`);
  }
  for (const p of spec.network.guestPorts ?? []) {
    if (!Number.isInteger(p) || p < 1 || p > 65535)
      throw invalidArgument('guestPorts', `${p} is not a TCP port`);
  }
  const build = ' (build the image with: kiln image build)';
  await needFile('kernel', spec.boot.kernel, build);
  await needFile('initrd', spec.boot.initrd, build);
  await needFile('rootfs', spec.boot.rootfs, build);
  if (spec.diskLayer !== undefined) await needFile('diskLayer', spec.diskLayer);
  const snap = spec.restore?.snapshot;
  if (snap) await needFile('restore.snapshot.stateFile', snap.stateFile);
  // A restore maps the snapshot's RAM file; a VM's own RAM file is created.
  if (snap?.ramFile !== undefined) await needFile('restore.snapshot.ramFile', snap.ramFile);
  else if (spec.ramFile !== undefined) {
    if (!spec.ramFile.startsWith('/'))
      throw invalidArgument('ramFile', `must be an absolute path, got "${spec.ramFile}"`);
    const parent = dirname(spec.ramFile);
    if (!(await stat(parent).catch(() => undefined))?.isDirectory())
      throw new KilnError('not_found', `ramFile: directory ${parent} does not exist`);
  }
  if (spec.privateRamFile !== undefined && !snap && spec.ramFile === undefined)
    await needFile('privateRamFile', spec.privateRamFile);
  const sock = join(runDir, spec.id, FILES.qmp);
  if (sock.length > MAX_SOCKET_PATH)
    throw invalidArgument(
      'runDir',
      `socket path ${sock} is longer than ${MAX_SOCKET_PATH} bytes; use a shorter run dir`,
    );
}
