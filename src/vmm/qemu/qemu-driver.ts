import { chmod, mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { KilnError, invalidArgument } from '../../core/errors.ts';
import type { Failpoint } from '../../core/failpoint.ts';
import { nullLogger } from '../../core/log.ts';
import { sleep } from '../../core/proc.ts';
import { UndoStack } from '../../core/undo.ts';
import { validatePublishedPort } from '../../core/validate.ts';
import type {
  Endpoint,
  OpOpts,
  SaveStateResult,
  StopOpts,
  VmInfo,
  VmmCapabilities,
  VmmDriver,
  VmSpec,
  VmState,
} from '../driver.ts';
import { resolveAccel, type AccelChoice, type AccelVerdict } from './accel.ts';
import { FORWARD_HOST, parseUsernetForwards, qemuArgs } from './args.ts';
import { QemuDiskLayers, freezeOverlay } from './disk-layers.ts';
import { hostTscKhz } from './host.ts';
import { hostIo, ioError, isAbsent, type HostIo } from './host-io.ts';
import { cancelOutgoing, restoreState, saveState } from './migration.ts';
import { exposeForward } from './port-forwards.ts';
import { planVm, validateSpec, type QemuVm } from './plan.ts';
import {
  findProcesses,
  killAndWait,
  killProcesses,
  procAlive,
  procStartTime,
  spawnDaemon,
  waitGone,
  type ProcScope,
} from './processes.ts';
import { QmpClient } from './qmp.ts';
import { QmpSessions } from './qmp-sessions.ts';
import {
  FILES,
  consoleTail,
  dirExists,
  infoOf,
  readRecord,
  vmDir,
  writeRecord,
  type VmRecord,
} from './record.ts';

export interface QemuDriverOpts {
  /** Directory holding one sub-directory per VM (overlay, QMP socket, serial log, record). */
  runDir: string;
  qemuBinary?: string;
  qemuImgBinary?: string;
  /** `auto` probes (see accel.ts); `kvm`/`tcg` force. Default `auto` (kilnd passes $KILN_ACCEL). */
  accel?: AccelChoice;
  /** Where the accelerator verdict is cached; default `<runDir>/../accel.json`. */
  accelCacheFile?: string;
  tcgCacheMiB?: number;
  /** The host loopback address guest ports are forwarded on (default FORWARD_HOST, 127.77.0.1). */
  forwardHost?: string;
  log?: Logger;
  /** Crash tests: `qemu:overlay kept` fires in `stop` between keeping the overlay and cleaning up. */
  failpoint?: Failpoint | undefined;
  /** Host reads (records, /proc, console log); tests inject failures here. */
  io?: HostIo;
}

/**
 * Boots kiln microVMs with QEMU's `microvm` machine. QEMU runs detached (`-daemonize`): it
 * outlives the process that started it, and `vm.json` in the VM's directory lets any later
 * driver re-attach (pid + start time + QMP socket). Each VM writes only to its own qcow2 overlay.
 */
export class QemuDriver implements VmmDriver {
  readonly #o: Required<Omit<QemuDriverOpts, 'accel' | 'failpoint'>> & { accel: AccelChoice };
  readonly #log: Logger;
  readonly #failpoint: Failpoint | undefined;
  readonly #sessions: QmpSessions;
  #verdict: Promise<AccelVerdict> | undefined;
  /** Per VM, the last `exposePort` in flight: they run one after the other (no duplicate forwards). */
  readonly #exposing = new Map<string, Promise<unknown>>();
  readonly disks: QemuDiskLayers;

  constructor(opts: QemuDriverOpts) {
    const accel = opts.accel ?? 'auto';
    this.#o = {
      runDir: opts.runDir,
      qemuBinary: opts.qemuBinary ?? 'qemu-system-x86_64',
      qemuImgBinary: opts.qemuImgBinary ?? 'qemu-img',
      accel,
      accelCacheFile: opts.accelCacheFile ?? join(opts.runDir, '..', 'accel.json'),
      tcgCacheMiB: opts.tcgCacheMiB ?? 64,
      forwardHost: opts.forwardHost ?? FORWARD_HOST,
      log: opts.log ?? nullLogger,
      io: opts.io ?? hostIo,
    };
    if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(this.#o.forwardHost))
      throw invalidArgument(
        'forwardHost',
        `must be an IPv4 loopback address (127.x.y.z), got "${this.#o.forwardHost}"`,
      );
    this.#log = this.#o.log.child({ component: 'qemu' });
    this.#failpoint = opts.failpoint;
    this.#sessions = new QmpSessions(this.#o.runDir, this.#log);
    this.disks = new QemuDiskLayers({ runDir: this.#o.runDir, qemuImgBinary: this.#o.qemuImgBinary });
  }

  capabilities(): VmmCapabilities {
    return { memorySnapshots: true, cowRamSharing: true, liveDiskFreeze: true };
  }

  /** The accelerator verdict (probing once if needed). */
  accel(boot: { kernel: string; initrd: string }): Promise<AccelVerdict> {
    this.#verdict ??= resolveAccel(this.#o.accel, {
      qemuBinary: this.#o.qemuBinary,
      kernel: boot.kernel,
      initrd: boot.initrd,
      cacheFile: this.#o.accelCacheFile,
      log: this.#log,
    });
    return this.#verdict;
  }

  get #procs(): ProcScope {
    return this.#o;
  }

  #dir(id: string): string {
    return vmDir(this.#o, id);
  }

  async start(spec: VmSpec, opts: OpOpts = {}): Promise<VmInfo> {
    await validateSpec(spec, this.#o.runDir);
    const vm = planVm(spec);
    const log = this.#log.child({ vmId: vm.id });
    const undo = new UndoStack();
    await this.#makeDir(vm.id, undo);
    try {
      const rec = await this.#launch(vm, undo, opts);
      undo.commit();
      log.info({ pid: rec.pid, accel: rec.accel, ports: rec.ports }, 'vm started');
      return infoOf(this.#o, rec, 'running');
    } catch (e) {
      await undo.unwind(log);
      throw e;
    }
  }

  /** Creates VM `id`'s directory (`already_exists` if it has one) and registers its removal. */
  async #makeDir(id: string, undo: UndoStack): Promise<void> {
    const dir = this.#dir(id);
    await mkdir(this.#o.runDir, { recursive: true });
    try {
      await mkdir(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST')
        throw new KilnError('already_exists', `VM ${id} already exists`, { details: { id } });
      throw e;
    }
    undo.push('remove VM directory', async () => {
      // Only once no QEMU of this VM can be running: the directory holds its disk.
      await killProcesses(this.#procs, id);
      await rm(dir, { recursive: true, force: true });
    });
  }

  /** Overlay, QEMU process, QMP, restore, forwards, record: a running VM, each step undoable. */
  async #launch(vm: QemuVm, undo: UndoStack, opts: OpOpts): Promise<VmRecord> {
    const dir = this.#dir(vm.id);
    const verdict = await this.accel(vm);
    const overlay = join(dir, FILES.overlay);
    await this.disks.createOverlay(vm.backing, overlay, opts);
    const args = qemuArgs(vm, {
      accel: verdict.accel,
      tcgCacheMiB: this.#o.tcgCacheMiB,
      tscKhz: hostTscKhz(),
      overlay,
      qmpSocket: join(dir, FILES.qmp),
      serialLog: join(dir, FILES.serial),
      pidFile: join(dir, FILES.pid),
      daemonize: true,
      forwardHost: vm.netns?.address ?? this.#o.forwardHost,
    });
    this.#log.debug({ vmId: vm.id, args }, 'spawning qemu');
    const pid = await spawnDaemon(this.#o.qemuBinary, args, join(dir, FILES.pid), vm.netns?.path);
    undo.push('kill qemu', () => killAndWait(this.#o.io, { pid, startTime: 0, id: vm.id }));
    const qmp = await QmpClient.connect(join(dir, FILES.qmp), { timeoutMs: opts.timeoutMs ?? 10_000 });
    this.#sessions.adopt(vm.id, qmp);
    undo.push('close QMP', () => {
      this.#sessions.forget(vm.id, true);
    });
    // QEMU's -daemonize sets umask 027: what it made since is group-readable. The VM's RAM and
    // serial log are private (its directory is 0700 anyway).
    await privateFiles([
      join(dir, FILES.qmp),
      join(dir, FILES.serial),
      vm.memoryFile?.share ? vm.memoryFile.path : undefined,
    ]);
    if (vm.incoming) await restoreState(qmp, vm, opts);
    const rec: VmRecord = {
      id: vm.id,
      pid,
      pidStartTime: procStartTime(this.#o.io, pid),
      accel: verdict.accel,
      hostAddr: vm.netns?.address ?? this.#o.forwardHost,
      ports: await this.#forwards(qmp, vm.guestPorts, vm.netns?.address ?? this.#o.forwardHost),
      startedAt: new Date().toISOString(),
      spec: vm,
    };
    await writeRecord(this.#o, rec);
    return rec;
  }

  /** Guest port -> the host port QEMU chose for its forward on the forward host. */
  async #forwards(qmp: QmpClient, guestPorts: number[], host: string): Promise<Record<number, number>> {
    const usernet = await qmp.execute<string>('human-monitor-command', { 'command-line': 'info usernet' });
    const forwards = parseUsernetForwards(usernet);
    const ports: Record<number, number> = {};
    for (const p of guestPorts) {
      const f = forwards[p];
      if (f?.addr !== host)
        throw new KilnError(
          'driver_error',
          `QEMU did not report a host forward on ${host} for guest port ${p}`,
        );
      ports[p] = f.port;
    }
    return ports;
  }

  async saveState(id: string, stateFile: string, opts: OpOpts = {}): Promise<SaveStateResult> {
    const rec = await this.#record(id);
    const state = await this.#state(rec);
    if (state === 'stopped')
      throw new KilnError('invalid_state', `VM ${id} is stopped; saving needs running or paused`);
    if (!stateFile.startsWith('/'))
      throw invalidArgument('stateFile', `must be an absolute path, got "${stateFile}"`);
    const q = await this.#sessions.client(id);
    const ramShared = rec.spec.memoryFile?.share === true;
    return saveState(q, { id, running: state === 'running', ramShared, stateFile }, opts);
  }

  async freezeDisk(id: string, layerPath: string, opts: OpOpts = {}): Promise<void> {
    const rec = await this.#record(id);
    const state = await this.#state(rec);
    if (state !== 'paused')
      throw new KilnError('invalid_state', `VM ${id} is ${state}; freezing its disk needs paused`);
    if (!layerPath.startsWith('/'))
      throw invalidArgument('layerPath', `must be an absolute path, got "${layerPath}"`);
    const q = await this.#sessions.client(id);
    await freezeOverlay(
      this.disks,
      q,
      {
        id,
        dir: this.#dir(id),
        current: rec.overlay ?? FILES.overlay,
        layerPath,
        record: (name) => writeRecord(this.#o, { ...rec, overlay: name }),
      },
      opts,
    );
  }

  #record(id: string): Promise<VmRecord> {
    return readRecord(this.#o, id, (i) => this.#notFound(i));
  }

  /** `not_found` for a VM without a record; the message names a process of it that still runs. */
  async #notFound(id: string): Promise<KilnError> {
    const live = await findProcesses(this.#procs, id);
    if (live.length === 0) return new KilnError('not_found', `VM ${id} does not exist`, { details: { id } });
    const pids = live.map((p) => p.pid);
    return new KilnError(
      'not_found',
      `VM ${id} has no record (its directory ${this.#dir(id)} is gone or incomplete) but its QEMU process ${pids.join(', ')} still runs; without its QMP socket it cannot be re-adopted, only killed`,
      { details: { id, pids } },
    );
  }

  /** True when the recorded QEMU process still exists (and is the same process). */
  #alive(rec: VmRecord): boolean {
    return procAlive(this.#o.io, rec.pid, rec.pidStartTime, rec.id);
  }

  async #state(rec: VmRecord): Promise<VmState> {
    return (await this.#sessions.runState(rec.id, () => this.#alive(rec))).state;
  }

  async status(id: string): Promise<VmInfo> {
    const rec = await this.#record(id);
    const st = await this.#sessions.runState(id, () => this.#alive(rec));
    return infoOf(this.#o, rec, st.state, st.fault);
  }

  consoleTail(id: string, maxLines = 30): Promise<string[]> {
    return consoleTail(this.#o, id, maxLines);
  }

  async pause(id: string, opts: OpOpts = {}): Promise<void> {
    const rec = await this.#record(id);
    const state = await this.#state(rec);
    if (state !== 'running')
      throw new KilnError('invalid_state', `VM ${id} is ${state}; pause needs running`);
    const q = await this.#sessions.client(id);
    await q.execute('stop', undefined, { timeoutMs: opts.timeoutMs ?? 10_000 });
  }

  async exposePort(id: string, guestPort: number, opts: OpOpts = {}): Promise<Endpoint> {
    validatePublishedPort('port', guestPort);
    const rec = await this.#record(id);
    const state = await this.#state(rec);
    if (state === 'stopped')
      throw new KilnError('invalid_state', `VM ${id} is stopped; exposing a port needs running or paused`);
    // On the host address of the agent's forward (per VM once VMs get their own network).
    const host = rec.hostAddr ?? '127.0.0.1';
    const q = await this.#sessions.client(id);
    const prev = this.#exposing.get(id) ?? Promise.resolve();
    const run = prev.catch(() => undefined).then(() => exposeForward(q, id, host, guestPort, opts));
    this.#exposing.set(id, run);
    try {
      return await run;
    } finally {
      if (this.#exposing.get(id) === run) this.#exposing.delete(id);
    }
  }

  async resume(id: string, opts: OpOpts = {}): Promise<void> {
    const rec = await this.#record(id);
    const state = await this.#state(rec);
    if (state !== 'paused') throw new KilnError('invalid_state', `VM ${id} is ${state}; resume needs paused`);
    const q = await this.#sessions.client(id);
    await cancelOutgoing(q, id, opts.timeoutMs ?? 10_000);
    await q.execute('cont', undefined, { timeoutMs: opts.timeoutMs ?? 10_000 });
  }

  async stop(id: string, opts: StopOpts = {}): Promise<void> {
    const rec = await this.#record(id);
    if (this.#alive(rec)) await this.#quit(rec, opts.timeoutMs ?? 5000);
    if (opts.keepOverlayAs) {
      // The disk as the VM left it becomes someone else's (a template's frozen layer).
      await rename(join(this.#dir(id), rec.overlay ?? FILES.overlay), opts.keepOverlayAs);
      this.#failpoint?.('qemu', 'overlay kept');
    }
    await this.#cleanup(id);
    this.#log.info({ vmId: id }, 'vm stopped');
  }

  /** Graceful QMP quit, SIGKILL after `graceMs`, an error if the process still lives. */
  async #quit(rec: VmRecord, graceMs: number): Promise<void> {
    const log = this.#log.child({ vmId: rec.id });
    try {
      const q = await this.#sessions.client(rec.id);
      await q.execute('quit', undefined, { timeoutMs: graceMs }).catch((e: unknown) => {
        // QEMU may close the socket before answering `quit`; that is success.
        if (this.#alive(rec)) throw e;
      });
    } catch (e) {
      log.warn({ err: e }, 'graceful quit failed; escalating');
    }
    const proc = { pid: rec.pid, startTime: rec.pidStartTime, id: rec.id };
    if (!(await waitGone(this.#o.io, proc, graceMs))) {
      log.warn({ pid: rec.pid }, 'qemu ignored quit; sending SIGKILL');
      await killAndWait(this.#o.io, proc);
    }
  }

  async kill(id: string): Promise<void> {
    let rec: VmRecord | undefined;
    try {
      rec = await this.#record(id);
    } catch (e) {
      if (!(e instanceof KilnError && e.code === 'not_found')) throw e;
    }
    if (rec) {
      if (this.#alive(rec)) await killAndWait(this.#o.io, { pid: rec.pid, startTime: rec.pidStartTime, id });
    } else {
      // No record: a start that crashed half-way, or a directory removed under a running VM.
      // Its process is found by command line.
      const exists = await dirExists(this.#o, id);
      const pids = await killProcesses(this.#procs, id);
      if (!exists && pids.length === 0)
        throw new KilnError('not_found', `VM ${id} does not exist`, { details: { id } });
      if (pids.length) this.#log.warn({ vmId: id, pids }, 'killed a VM process that had no record');
    }
    await this.#cleanup(id);
  }

  /** Forgets the VM and removes its directory: only once its process is known to be gone. */
  async #cleanup(id: string): Promise<void> {
    this.#sessions.forget(id, true);
    await rm(this.#dir(id), { recursive: true, force: true });
  }

  async list(): Promise<string[]> {
    const ids = new Set<string>();
    try {
      for (const name of await this.#o.io.dirs(this.#o.runDir)) if (!name.startsWith('.')) ids.add(name);
    } catch (e) {
      if (!isAbsent(e)) throw ioError(`listing VM directories in ${this.#o.runDir}`, e);
    }
    // VMs whose directory is gone while QEMU still runs (removed from outside, a lost start).
    for (const p of await findProcesses(this.#procs)) ids.add(p.id);
    return [...ids].sort();
  }

  async close(): Promise<void> {
    this.#sessions.closeAll();
    await sleep(0);
  }
}

/** Removes group and other bits from files that exist (QEMU made them under its own umask). */
async function privateFiles(paths: (string | undefined)[]): Promise<void> {
  for (const p of paths) if (p) await chmod(p, 0o600).catch(() => undefined);
}
