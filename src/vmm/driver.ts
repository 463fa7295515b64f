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

export type VmState = 'running' | 'paused' | 'stopped';

/** What to boot. Paths are absolute; the root disk is never written (each VM gets an overlay). */
export interface VmSpec {
  /** A name-safe id (see core/validate `validateName`); also names the VM's runtime directory. */
  id: string;
  kernel: string;
  initrd: string;
  /** The read-only base root filesystem (raw ext4). */
  rootfs: string;
  memoryMiB: number;
  vcpus: number;
  /** Guest TCP ports to forward to the host (`VmInfo.hostAddr`, port chosen by the host kernel). Default [49983]. */
  guestPorts?: number[];
  /** Extra kernel command line words. */
  kernelArgs?: string[];
  /** Cut the guest's network egress (QEMU user-net `restrict=on`); forwards still work. */
  restrictNetwork?: boolean;
  /**
   * The disk the VM's private overlay sits on; default: `rootfs` (raw). A restored VM's overlay
   * sits on the snapshot's frozen disk layer (qcow2), which itself sits on the base image.
   */
  disk?: { backing: string; format: 'raw' | 'qcow2' };
  /**
   * Guest RAM in a file. `share: true` writes guest memory to the file (a VM whose RAM becomes a
   * template's); `share: false` maps it privately copy-on-write (restores of that template:
   * pages are shared with every other restore until written).
   */
  memoryFile?: { path: string; share: boolean };
  /** Restore: load device state from this file (saved by `saveState`) instead of booting. */
  incoming?: {
    stateFile: string;
    /**
     * The file also holds the guest RAM (it was saved from a VM whose RAM was not a shared file);
     * with `memoryFile` (share on) the RAM is loaded into that file.
     */
    ramInStream?: boolean;
    /** Stay paused once loaded (to save the state again, e.g. with RAM moved into a file). */
    stayPaused?: boolean;
  };
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
  /**
   * The host address the guest ports are forwarded on (a loopback address of the driver's
   * choosing; the QEMU driver's is 127.77.0.1, which kilnd's port guard keeps to its own uid).
   */
  hostAddr: string;
  /** Guest port -> host port on `hostAddr`. */
  ports: Record<number, number>;
  /** The VM's runtime directory (overlay, QMP socket, serial log, record). */
  dir: string;
  /** The disk overlay the VM writes to now (it changes when `freezeDisk` runs). */
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
  /** Keep the VM's disk overlay: move it here once QEMU has exited (same filesystem). */
  keepOverlayAs?: string;
}

export interface VmmDriver {
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
  /** Unfreezes the vCPUs. Legal in `paused`. */
  resume(id: string, opts?: OpOpts): Promise<void>;
  /**
   * Ends the VM: graceful (hypervisor quit), then SIGKILL after `timeoutMs`, then an error if the
   * process still lives. Legal in `running`, `paused` and `stopped` (then it only cleans up).
   */
  stop(id: string, opts?: StopOpts): Promise<void>;
  /**
   * Saves the VM's device state (and its RAM unless the RAM is a shared file) to `stateFile`.
   * Legal in `running` and `paused`; leaves the VM `paused` so its disk and RAM file stay as saved
   * until the caller resumes or stops it.
   */
  saveState(id: string, stateFile: string, opts?: OpOpts): Promise<SaveStateResult>;
  /**
   * Freezes the VM's disk as it is now: its current overlay moves to `layerPath` (same
   * filesystem, must not exist) and becomes read-only, and the VM goes on writing to a new
   * overlay on top of it (no data is copied). Legal in `paused`; the VM stays paused. On failure
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
