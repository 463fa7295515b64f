/**
 * The hypervisor boundary. The daemon decides; a `VmmDriver` does. Each method documents the VM
 * states in which it is legal; a call in any other state fails with `invalid_state`, a call for an
 * unknown id with `not_found`, and nothing is left half-done on failure.
 *
 * States: a live VM is `running` or `paused`; a VM whose process died (and that nobody has cleaned
 * up yet) is `stopped`. `stop` and `kill` end the VM and remove every file the driver made for
 * it; afterwards the driver no longer knows the id (`not_found`).
 *
 * Only a positive observation makes a VM `stopped` or unknown: its process is gone (or the pid
 * now belongs to another process), or its record does not exist. A host error that leaves this
 * open (EMFILE, EIO, EACCES, a hypervisor that does not answer) is a `driver_error` or `timeout`,
 * and nothing is removed: the files of a VM whose process may live are never deleted.
 */

import { invalidArgument } from '../core/errors.ts';
import { GUEST_AGENT_PORT } from '../core/validate.ts';

export type VmState = 'running' | 'paused' | 'stopped';

/**
 * The machine a VM is built as (its devices). A restore must use the machine its snapshot was
 * saved with, so each snapshot records it (`VmInfo.machine`); new VMs get the newest.
 * 1: microvm with the legacy PIT (before 2026-12). 2: without it: the guest kernel keeps time with
 * the local APIC and the TSC and never uses the PIT, which the firmware leaves counting, so the
 * VMM woke 36 times a second to waggle its masked IRQ (most of an idle TCG VMM's CPU).
 */
export const MACHINE_REVISION = 2;
/** The machine of VMs, records and snapshots that predate machine revisions. */
export const LEGACY_MACHINE = 1;

/** `invalid_argument` unless `machine` is undefined (the newest) or a revision this kiln builds. */
export function validateMachine(machine: unknown): asserts machine is number | undefined {
  if (machine === undefined) return;
  if (typeof machine !== 'number' || !Number.isInteger(machine) || machine < LEGACY_MACHINE)
    throw invalidArgument(
      'machine',
      `must be a machine revision from ${LEGACY_MACHINE} to ${MACHINE_REVISION}, got ${JSON.stringify(machine)}`,
    );
  if (machine > MACHINE_REVISION)
    throw invalidArgument(
      'machine',
      `revision ${machine} is newer than this kiln's ${MACHINE_REVISION}: use a newer kiln`,
    );
}

/** The guest port the guest agent (envd) listens on; every driver exposes it as `VmInfo.agent`. */
export const AGENT_PORT = GUEST_AGENT_PORT;

/** What a fresh VM boots from. Paths are absolute; nothing here is ever written. */
export interface BootSource {
  kernel: string;
  initrd: string;
  /** The read-only base root filesystem image (raw ext4): the bottom of every disk layer chain. */
  rootfs: string;
  /** Extra kernel command line words. */
  kernelArgs?: string[];
}

export interface Resources {
  memoryMiB: number;
  vcpus: number;
}

/**
 * How the guest is attached to the network. `restricted`: no egress at all, only the host
 * reaches the exposed guest ports; `open`: the guest may also reach out — as far as the network
 * namespace it runs in lets it (`namespace`: the daemon's sandbox networks, src/net, make and
 * filter those; without one the VM shares the host's network and reaches its loopback).
 */
export interface NetworkAttachment {
  kind: 'restricted' | 'open';
  /** Guest TCP ports the host reaches (`VmInfo.endpoints`), besides the agent's, always exposed. */
  guestPorts?: number[];
  /**
   * Run the VM inside this network namespace (`path`, e.g. /run/netns/x, must exist) and expose
   * its guest ports on `address`, the namespace's own address that the host routes to.
   */
  namespace?: { path: string; address: string };
}

/** Where the host reaches a guest port. */
export interface Endpoint {
  host: string;
  port: number;
}

/**
 * A VM's saved memory (see `saveState`): device state, and the guest RAM either inside
 * `stateFile` or in `ramFile` (a VM started with `VmSpec.ramFile`; `capabilities().cowRamSharing`).
 */
export interface MemorySnapshot {
  stateFile: string;
  /** Guest RAM kept apart; restores map it copy-on-write and share its pages until written. */
  ramFile?: string;
}

/**
 * What to run: a VM booted from `boot`, or restored from `restore` (which must have been saved
 * with the same boot source and resources). Its disk is a private writable layer over the disk
 * layer chain topped by `diskLayer` (default: `boot.rootfs` alone); nothing below it is written.
 */
export interface VmSpec {
  /** A name-safe id (see core/validate `validateName`); also names the VM's runtime directory. */
  id: string;
  boot: BootSource;
  resources: Resources;
  network: NetworkAttachment;
  /**
   * The frozen disk layer (made by `freezeDisk`, `stop({keepOverlayAs})`, `disks.flatten` or
   * imported after `disks.verifyImported`) the VM's writable layer sits on; the layers below it
   * are the ones it was made over.
   */
  diskLayer?: string;
  /**
   * Keep the guest RAM in this new file (its directory must exist), so that `saveState` writes
   * device state only and restores share the RAM copy-on-write. Needs `cowRamSharing`. With a
   * `restore` whose RAM is inside the state file, the RAM is loaded into this file.
   */
  ramFile?: string;
  /**
   * Boot (no `restore`) with guest RAM mapped copy-on-write from this existing file of at least
   * the memory's size, never written (a sparse file of zeros will do). The VM then has the memory
   * layout of a restored one, so its `saveState` restores like a snapshot's (a filesystem-only
   * pause's cold boot, whose sandbox may be snapshotted later). Needs `cowRamSharing`.
   */
  privateRamFile?: string;
  /** The machine revision (default `MACHINE_REVISION`); a restore must give its snapshot's. */
  machine?: number;
  /** Restore from a saved memory snapshot instead of booting (needs `memorySnapshots`). */
  restore?: {
    snapshot: MemorySnapshot;
    /** Stay paused once loaded (to save the state again, e.g. with the RAM moved into a file). */
    paused?: boolean;
  };
}

/** What a driver can do; the daemon asks before it relies on any of these. */
export interface VmmCapabilities {
  /** `saveState` and `VmSpec.restore`. */
  memorySnapshots: boolean;
  /** `VmSpec.ramFile` and `MemorySnapshot.ramFile`: restores of one snapshot share its RAM pages. */
  cowRamSharing: boolean;
  /** `freezeDisk` on a paused VM that then goes on over a new writable layer (no copy). */
  liveDiskFreeze: boolean;
}

/**
 * Disk layer files: frozen, immutable layers each standing on the one below, down to a boot
 * source's rootfs. Their format is the driver's business (QEMU: qcow2, via qemu-img).
 */
export interface DiskLayers {
  /** The size of the disk the guest sees (bytes) for a chain topped by `layer`. Cheap, synchronous. */
  virtualSize(layer: string): number;
  /** The most host bytes a VM's writable layer over a disk of `virtualBytes` can take. */
  maxWritableBytes(virtualBytes: number): number;
  /** Host bytes VM `id`'s writable layers hold now (0 when it has none). */
  writtenBytes(id: string): number;
  /**
   * Writes `layer` and the layers between it and `base` as one new layer `out` standing directly
   * on `base` (same guest-visible content). `out` must not be in use.
   */
  flatten(layer: string, base: string, out: string, opts?: OpOpts): Promise<void>;
  /** Writes the whole chain topped by `layer` as one standalone layer `out` (no base: portable). */
  exportStandalone(layer: string, out: string, opts?: OpOpts): Promise<void>;
  /**
   * Checks an untrusted layer file (from an imported archive) before any VM opens it: it must be
   * one standalone layer of this driver's format referring to no other file; `invalid_argument`
   * naming what is wrong otherwise. A verified layer can be a `VmSpec.diskLayer` and a rootfs.
   */
  verifyImported(path: string, opts?: OpOpts): Promise<void>;
}

export interface SaveStateResult {
  /** How long the vCPUs were stopped by the save (ms). */
  pauseMs: number;
  /** Bytes of device state (and RAM, when RAM is not in a shared file) written. */
  bytes: number;
}

export interface VmInfo {
  id: string;
  state: VmState;
  pid: number;
  accel: 'kvm' | 'tcg';
  /** The machine revision it runs as (what a snapshot of it records). */
  machine: number;
  /**
   * Where the host reaches the guest agent (the QEMU driver forwards it on a loopback address of
   * its own, which kilnd's port guard keeps to its own uid).
   */
  agent: Endpoint;
  /** Guest port -> where the host reaches it (the agent's and `network.guestPorts`). */
  endpoints: Record<number, Endpoint>;
  /** The network namespace the VM runs in (`VmSpec.network.namespace.path`), if any. */
  namespace?: string;
  /** The VM's runtime directory (writable layer, control socket, console log, record). */
  dir: string;
  /** The writable disk layer the VM writes to now (it changes when `freezeDisk` runs). */
  overlay: string;
  serialLog: string;
  startedAt: string;
  /**
   * Set when the hypervisor stopped the vCPUs by itself (state `paused` without a pause request):
   * `io_error` = a disk write failed; `nospace` when the host's disk was full.
   */
  fault?: { kind: 'io_error'; nospace: boolean; message: string };
}

export interface OpOpts {
  signal?: AbortSignal;
  timeoutMs?: number;
}

export interface StopOpts extends OpOpts {
  /** Keep the VM's writable disk layer as a frozen layer here, once the VM has exited (same filesystem). */
  keepOverlayAs?: string;
}

export interface VmmDriver {
  /** What this driver can do (constant for an instance). */
  capabilities(): VmmCapabilities;
  /** Operations on disk layer files (no VM involved). */
  readonly disks: DiskLayers;
  /** Boots a new VM. Legal when no VM with `spec.id` exists. Resolves once the VM runs (not when the guest is ready). */
  start(spec: VmSpec, opts?: OpOpts): Promise<VmInfo>;
  /**
   * The VM's current facts. Legal in every state; a VM whose process died reports `stopped`.
   * `not_found` after stop/kill, and for a VM whose record is gone even if its process still runs
   * (the message says so; `kill` ends that process).
   */
  status(id: string): Promise<VmInfo>;
  /** Freezes the vCPUs. Legal in `running`. */
  pause(id: string, opts?: OpOpts): Promise<void>;
  /**
   * Makes guest TCP port `guestPort` reachable from the host and answers where (on the host
   * address of the VM's agent forward, `VmInfo.agent.host`). Legal in `running` and `paused`.
   * Idempotent: a port already exposed (also by an earlier driver instance) answers the same
   * endpoint. `invalid_argument` for a non-port and for `AGENT_PORT` (the agent is reached only
   * through `VmInfo.agent`). The forward lasts as long as the VM process: a VM restored from a
   * snapshot starts with none.
   */
  exposePort(id: string, guestPort: number, opts?: OpOpts): Promise<Endpoint>;
  /** Unfreezes the vCPUs. Legal in `paused`. */
  resume(id: string, opts?: OpOpts): Promise<void>;
  /**
   * Ends the VM: graceful (hypervisor quit), then SIGKILL after `timeoutMs`, then an error if the
   * process still lives. Legal in `running`, `paused` and `stopped` (then it only cleans up).
   */
  stop(id: string, opts?: StopOpts): Promise<void>;
  /**
   * Saves the VM's device state (and its RAM unless it runs with `VmSpec.ramFile`) to `stateFile`:
   * a `MemorySnapshot` with `ramFile` = the spec's when it had one. Needs `memorySnapshots`.
   * Legal in `running` and `paused`; leaves the VM `paused` so its disk and RAM file stay as saved
   * until the caller resumes or stops it.
   */
  saveState(id: string, stateFile: string, opts?: OpOpts): Promise<SaveStateResult>;
  /**
   * Freezes the VM's disk as it is now: its current writable layer moves to `layerPath` (same
   * filesystem, must not exist) and becomes read-only, and the VM goes on writing to a new
   * writable layer on top of it (no data is copied). Needs `liveDiskFreeze`. Legal in `paused`; the VM stays paused. On failure
   * the VM keeps its old overlay and nothing is left at `layerPath`. Repeating the call with the
   * same layer after a crash interrupted it finishes it (or finds it done).
   */
  freezeDisk(id: string, layerPath: string, opts?: OpOpts): Promise<void>;
  /**
   * SIGKILLs the VM and cleans up. Legal in every state, and for a VM whose record or directory
   * is gone while its process still runs (found by its command line).
   */
  kill(id: string): Promise<void>;
  /**
   * Ids of the VMs this driver's runtime directory holds (live or not yet cleaned), and of VM
   * processes of this runtime directory that still run although their directory is gone.
   */
  list(): Promise<string[]>;
  /**
   * The last lines (at most `maxLines`) the guest wrote to its console: kernel messages, init,
   * agent logs. For telling why a VM ended: read it before `stop`/`kill` removes it. Legal in
   * every state; `not_found` after stop/kill.
   */
  consoleTail(id: string, maxLines?: number): Promise<string[]>;
  /**
   * Drops in-memory handles (QMP connections); VMs keep running and a new driver instance (a
   * restarted daemon) re-attaches. One driver instance owns a VM's control channel at a time.
   */
  close(): Promise<void>;
}
