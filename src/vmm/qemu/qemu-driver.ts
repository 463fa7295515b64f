import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { diskFull } from '../../core/disk-space.ts';
import { KilnError, NO_SPACE_ADVICE, invalidArgument } from '../../core/errors.ts';
import type { Failpoint } from '../../core/failpoint.ts';
import { run } from '../../core/exec.ts';
import { writeFileAtomic } from '../../core/fs-atomic.ts';
import { nullLogger } from '../../core/log.ts';
import { parseProcStat, sleep } from '../../core/proc.ts';
import { UndoStack } from '../../core/undo.ts';
import { validateMemoryMiB, validateName, validateVcpus } from '../../core/validate.ts';
import type { OpOpts, SaveStateResult, StopOpts, VmInfo, VmmDriver, VmSpec, VmState } from '../driver.ts';
import { resolveAccel, type Accel, type AccelChoice, type AccelVerdict } from './accel.ts';
import { AGENT_PORT, FORWARD_HOST, parseUsernetForwards, qemuArgs } from './args.ts';
import { hostMemoryMiB, hostTscKhz } from './host.ts';
import { hostIo, ioError, isAbsent, type HostIo } from './host-io.ts';
import { QmpClient } from './qmp.ts';

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

/** What a VM's directory records so that a later process can re-attach (`vm.json`). */
interface VmRecord {
  id: string;
  pid: number;
  /** /proc/PID/stat start time: guards against a recycled pid. */
  pidStartTime: number;
  accel: Accel;
  /** Host address of the forwards; records written before it existed forwarded on 127.0.0.1. */
  hostAddr?: string;
  ports: Record<number, number>;
  startedAt: string;
  spec: VmSpec;
  /** The overlay the VM writes to, relative to its directory (FILES.overlay until a freeze). */
  overlay?: string;
}

const FILES = {
  record: 'vm.json',
  overlay: 'overlay.qcow2',
  qmp: 'qmp.sock',
  serial: 'serial.log',
  pid: 'qemu.pid',
} as const;

// sun_path is 108 bytes including the NUL.
const MAX_SOCKET_PATH = 107;

/**
 * Boots kiln microVMs with QEMU's `microvm` machine. QEMU runs detached (`-daemonize`): it
 * outlives the process that started it, and `vm.json` in the VM's directory lets any later
 * driver re-attach (pid + start time + QMP socket). Each VM writes only to its own qcow2 overlay.
 */
export class QemuDriver implements VmmDriver {
  readonly #o: Required<Omit<QemuDriverOpts, 'accel' | 'failpoint'>> & { accel: AccelChoice };
  readonly #log: Logger;
  readonly #failpoint: Failpoint | undefined;
  readonly #qmp = new Map<string, Promise<QmpClient>>();
  /** The last disk I/O error QEMU reported per VM (QMP BLOCK_IO_ERROR): why it stopped a VM. */
  readonly #ioErrors = new Map<string, { nospace: boolean; reason: string; operation: string }>();
  #verdict: Promise<AccelVerdict> | undefined;

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
  }

  /** The accelerator verdict (probing once if needed). */
  accel(spec: Pick<VmSpec, 'kernel' | 'initrd'>): Promise<AccelVerdict> {
    this.#verdict ??= resolveAccel(this.#o.accel, {
      qemuBinary: this.#o.qemuBinary,
      kernel: spec.kernel,
      initrd: spec.initrd,
      cacheFile: this.#o.accelCacheFile,
      log: this.#log,
    });
    return this.#verdict;
  }

  #dir(id: string): string {
    return join(this.#o.runDir, id);
  }

  async #validate(spec: VmSpec): Promise<void> {
    validateName('id', spec.id);
    validateMemoryMiB(spec.memoryMiB);
    validateVcpus(spec.vcpus);
    const hostMem = hostMemoryMiB();
    if (hostMem > 0 && spec.memoryMiB > hostMem) {
      throw invalidArgument('memoryMiB', `${spec.memoryMiB} MiB exceeds this host's ${hostMem} MiB`);
    }
    for (const [field, path] of [
      ['kernel', spec.kernel],
      ['initrd', spec.initrd],
      ['rootfs', spec.rootfs],
    ] as const) {
      if (!path.startsWith('/')) throw invalidArgument(field, `must be an absolute path, got "${path}"`);
      const st = await stat(path).catch(() => undefined);
      if (!st?.isFile()) {
        throw new KilnError(
          'not_found',
          `${field} ${path} does not exist (build the image with: kiln image build)`,
          {
            details: { field, path },
          },
        );
      }
    }
    const extra: [string, string | undefined][] = [
      ['disk.backing', spec.disk?.backing],
      ['incoming.stateFile', spec.incoming?.stateFile],
      // A private (restore) mapping needs the template's RAM file; a shared one is created.
      ['memoryFile.path', spec.memoryFile && !spec.memoryFile.share ? spec.memoryFile.path : undefined],
    ];
    for (const [field, path] of extra) {
      if (path === undefined) continue;
      if (!path.startsWith('/')) throw invalidArgument(field, `must be an absolute path, got "${path}"`);
      if (!(await stat(path).catch(() => undefined))?.isFile()) {
        throw new KilnError('not_found', `${field} ${path} does not exist`, { details: { field, path } });
      }
    }
    if (spec.memoryFile?.share) {
      const parent = dirname(spec.memoryFile.path);
      if (!(await stat(parent).catch(() => undefined))?.isDirectory()) {
        throw new KilnError('not_found', `memoryFile.path: directory ${parent} does not exist`);
      }
    }
    for (const p of spec.guestPorts ?? []) {
      if (!Number.isInteger(p) || p < 1 || p > 65535)
        throw invalidArgument('guestPorts', `${p} is not a TCP port`);
    }
    const sock = join(this.#dir(spec.id), FILES.qmp);
    if (sock.length > MAX_SOCKET_PATH) {
      throw invalidArgument(
        'runDir',
        `socket path ${sock} is longer than ${MAX_SOCKET_PATH} bytes; use a shorter run dir`,
      );
    }
  }

  async start(spec: VmSpec, opts: OpOpts = {}): Promise<VmInfo> {
    await this.#validate(spec);
    const dir = this.#dir(spec.id);
    const log = this.#log.child({ vmId: spec.id });
    const undo = new UndoStack();
    await mkdir(this.#o.runDir, { recursive: true });
    try {
      await mkdir(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new KilnError('already_exists', `VM ${spec.id} already exists`, { details: { id: spec.id } });
      }
      throw e;
    }
    undo.push('remove VM directory', async () => {
      // Only once no QEMU of this VM can be running: the directory holds its disk.
      await this.#killProcesses(spec.id);
      await rm(dir, { recursive: true, force: true });
    });
    try {
      const verdict = await this.accel(spec);
      const overlay = join(dir, FILES.overlay);
      const disk = spec.disk ?? { backing: spec.rootfs, format: 'raw' };
      await run(
        this.#o.qemuImgBinary,
        ['create', '-q', '-f', 'qcow2', '-b', disk.backing, '-F', disk.format, overlay],
        {
          failCode: 'driver_error',
          signal: opts.signal,
        },
      );
      const args = qemuArgs(spec, {
        accel: verdict.accel,
        tcgCacheMiB: this.#o.tcgCacheMiB,
        tscKhz: hostTscKhz(),
        overlay,
        qmpSocket: join(dir, FILES.qmp),
        serialLog: join(dir, FILES.serial),
        pidFile: join(dir, FILES.pid),
        daemonize: true,
        forwardHost: this.#o.forwardHost,
      });
      log.debug({ args }, 'spawning qemu');
      const pid = await this.#spawnDaemon(args, join(dir, FILES.pid));
      undo.push('kill qemu', async () => {
        killQuiet(pid);
        if (!(await this.#waitGone(pid, 0, spec.id, 5000)))
          throw new KilnError('driver_error', `QEMU pid ${pid} of VM ${spec.id} survived SIGKILL`);
      });
      const qmp = await QmpClient.connect(join(dir, FILES.qmp), { timeoutMs: opts.timeoutMs ?? 10_000 });
      this.#watch(spec.id, qmp);
      this.#qmp.set(spec.id, Promise.resolve(qmp));
      undo.push('close QMP', () => {
        this.#forget(spec.id);
      });
      qmp.once('close', () => {
        this.#qmp.delete(spec.id);
      });
      // QEMU's -daemonize sets umask 027: what it made since is group-readable. The VM's RAM and
      // serial log are private (its directory is 0700 anyway).
      await privateFiles([
        join(dir, FILES.qmp),
        join(dir, FILES.serial),
        spec.memoryFile?.share ? spec.memoryFile.path : undefined,
      ]);
      if (spec.incoming) await this.#restoreState(qmp, spec, opts);
      const usernet = await qmp.execute<string>('human-monitor-command', { 'command-line': 'info usernet' });
      const forwards = parseUsernetForwards(usernet);
      const ports: Record<number, number> = {};
      for (const p of spec.guestPorts ?? [AGENT_PORT]) {
        const f = forwards[p];
        if (f?.addr !== this.#o.forwardHost)
          throw new KilnError(
            'driver_error',
            `QEMU did not report a host forward on ${this.#o.forwardHost} for guest port ${p}`,
          );
        ports[p] = f.port;
      }
      const rec: VmRecord = {
        id: spec.id,
        pid,
        pidStartTime: this.#startTime(pid),
        accel: verdict.accel,
        hostAddr: this.#o.forwardHost,
        ports,
        startedAt: new Date().toISOString(),
        spec,
      };
      await writeFileAtomic(join(dir, FILES.record), JSON.stringify(rec, null, 2));
      undo.commit();
      log.info({ pid, accel: verdict.accel, ports }, 'vm started');
      return this.#info(rec, 'running');
    } catch (e) {
      await undo.unwind(log);
      throw e;
    }
  }

  /**
   * Loads a saved state into a VM started with `-incoming defer`, then runs it. With RAM in a
   * file, `x-ignore-shared` makes QEMU take RAM from that file instead of the stream.
   */
  async #restoreState(qmp: QmpClient, spec: VmSpec, opts: OpOpts): Promise<void> {
    const stateFile = spec.incoming?.stateFile ?? '';
    if (spec.memoryFile && !spec.incoming?.ramInStream) {
      await qmp.execute('migrate-set-capabilities', {
        capabilities: [{ capability: 'x-ignore-shared', state: true }],
      });
    }
    await qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuote(stateFile)}` });
    const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
    for (;;) {
      const st = await qmp.execute<{ status: string; running: boolean }>('query-status');
      if (st.running) return;
      if (st.status === 'paused' || st.status === 'prelaunch') {
        const mig = await qmp.execute<{ status?: string }>('query-migrate');
        if (mig.status === 'failed')
          throw new KilnError('driver_error', `restoring ${stateFile} failed (QEMU migration failed)`);
        if (mig.status === 'completed' || mig.status === undefined) {
          if (!spec.incoming?.stayPaused) await qmp.execute('cont');
          return;
        }
      }
      if (st.status === 'internal-error' || st.status === 'shutdown') {
        throw new KilnError('driver_error', `restoring ${stateFile} failed: VM is ${st.status}`);
      }
      if (Date.now() > deadline)
        throw new KilnError('timeout', `restoring ${stateFile} did not finish in time (status ${st.status})`);
      await sleep(5);
    }
  }

  async saveState(id: string, stateFile: string, opts: OpOpts = {}): Promise<SaveStateResult> {
    const rec = await this.#record(id);
    const state = await this.#state(rec);
    if (state === 'stopped')
      throw new KilnError('invalid_state', `VM ${id} is stopped; saving needs running or paused`);
    if (!stateFile.startsWith('/'))
      throw invalidArgument('stateFile', `must be an absolute path, got "${stateFile}"`);
    const q = await this.#client(id);
    const t0 = performance.now();
    if (state === 'running') await q.execute('stop');
    await q.execute('migrate-set-capabilities', {
      capabilities: [{ capability: 'x-ignore-shared', state: rec.spec.memoryFile?.share === true }],
    });
    // The default 128 MiB/s throttle makes a local save several times slower than the disk.
    await q.execute('migrate-set-parameters', { 'max-bandwidth': 64 * 2 ** 30 });
    // The shell QEMU runs has its umask (027 once daemonized): the saved state is private.
    await q.execute('migrate', { uri: `exec:umask 077 && cat > ${shellQuote(stateFile)}` });
    const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
    for (;;) {
      const m = await q.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
      if (m.status === 'completed') break;
      if (m.status === 'failed' || m.status === 'cancelled') {
        // `cat` dying on ENOSPC reaches QEMU as a broken pipe: look at the disk itself.
        const full = diskFull(dirname(stateFile));
        throw new KilnError(
          full ? 'no_space' : 'driver_error',
          `saving VM ${id} failed: ${m['error-desc'] ?? m.status}${full ? ` (the disk of ${stateFile} is full): ${NO_SPACE_ADVICE}` : ''}`,
        );
      }
      if (Date.now() > deadline) throw new KilnError('timeout', `saving VM ${id} did not finish in time`);
      await sleep(2);
    }
    const pauseMs = performance.now() - t0;
    const bytes = (await stat(stateFile)).size;
    return { pauseMs, bytes };
  }

  async freezeDisk(id: string, layerPath: string, opts: OpOpts = {}): Promise<void> {
    const rec = await this.#record(id);
    const state = await this.#state(rec);
    if (state !== 'paused')
      throw new KilnError('invalid_state', `VM ${id} is ${state}; freezing its disk needs paused`);
    if (!layerPath.startsWith('/'))
      throw invalidArgument('layerPath', `must be an absolute path, got "${layerPath}"`);
    const dir = this.#dir(id);
    const q = await this.#client(id);
    const cur = join(dir, rec.overlay ?? FILES.overlay);
    const n = Number(/^overlay-(\d+)\.qcow2$/.exec(rec.overlay ?? '')?.[1] ?? 0) + 1;
    const nextName = `overlay-${n}.qcow2`;
    const next = join(dir, nextName);
    const record = (name: string): Promise<void> =>
      writeFileAtomic(join(dir, FILES.record), JSON.stringify({ ...rec, overlay: name }, null, 2));
    // Finishing a freeze a crash interrupted (same VM, same layer): see how far it got.
    const active = await activeImage(q);
    if (existsSync(layerPath)) {
      if (active !== cur && dirname(active) === dir) {
        await record(basename(active)); // switched already; only the record was missing
        return;
      }
      // Done and recorded: the overlay the VM writes to sits on this layer.
      if (existsSync(cur) && (await this.#backingOf(cur)) === layerPath) return;
      if (existsSync(cur)) throw new KilnError('already_exists', `${layerPath} already exists`);
      // The overlay was moved to the layer but the VM was not switched yet: go on from there.
    } else {
      // QEMU keeps the old overlay open: moving its name does not disturb the VM.
      try {
        await rename(cur, layerPath);
      } catch (e) {
        throw new KilnError(
          'driver_error',
          `cannot move VM ${id}'s overlay to ${layerPath}: ${(e as Error).message} (it must be on the same filesystem as the run dir)`,
          { cause: e },
        );
      }
    }
    try {
      await rm(next, { force: true });
      await run(
        this.#o.qemuImgBinary,
        ['create', '-q', '-f', 'qcow2', '-b', layerPath, '-F', 'qcow2', next],
        {
          failCode: 'driver_error',
          signal: opts.signal,
        },
      );
      // `existing`: QEMU opens our overlay, whose header names the layer's final path as its backing.
      await q.execute(
        'blockdev-snapshot-sync',
        { device: 'root', 'snapshot-file': next, format: 'qcow2', mode: 'existing' },
        { timeoutMs: opts.timeoutMs ?? 30_000 },
      );
    } catch (e) {
      await rm(next, { force: true });
      await rename(layerPath, cur);
      throw e;
    }
    await record(nextName);
  }

  /** The backing file named in a qcow2 header (read while QEMU holds the image: -U). */
  async #backingOf(image: string): Promise<string | undefined> {
    const r = await run(this.#o.qemuImgBinary, ['info', '-U', '--output=json', image], {
      failCode: 'driver_error',
    });
    return (JSON.parse(r.stdout) as { 'backing-filename'?: string })['backing-filename'];
  }

  /** Spawns QEMU with -daemonize; resolves with the daemon's pid once the parent exited 0. */
  #spawnDaemon(args: string[], pidFile: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const child = spawn(this.#o.qemuBinary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let err = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
      child.stdout.resume();
      child.on('error', (e: NodeJS.ErrnoException) => {
        reject(
          e.code === 'ENOENT'
            ? new KilnError(
                'missing_tool',
                `${this.#o.qemuBinary} is not installed (apt-get install qemu-system-x86)`,
              )
            : new KilnError('driver_error', `spawning QEMU: ${e.message}`, { cause: e }),
        );
      });
      child.on('close', (code) => {
        if (code !== 0) {
          reject(
            new KilnError('driver_error', `QEMU failed to start (exit ${code}): ${err.trim().slice(-2000)}`),
          );
          return;
        }
        readFile(pidFile, 'utf8').then(
          (s) => {
            const pid = Number(s.trim());
            if (!Number.isInteger(pid) || pid <= 0)
              reject(new KilnError('driver_error', `bad QEMU pid file: "${s}"`));
            else resolve(pid);
          },
          (e: unknown) => {
            reject(new KilnError('driver_error', `QEMU started but wrote no pid file`, { cause: e }));
          },
        );
      });
    });
  }

  /**
   * The VM's record. `not_found` only when it does not exist (ENOENT); any other read error
   * (EMFILE, EACCES, EIO) is a `driver_error`: it says nothing about whether the VM lives.
   */
  async #record(id: string): Promise<VmRecord> {
    validateName('id', id);
    const path = join(this.#dir(id), FILES.record);
    let text: string;
    try {
      text = await this.#o.io.readFile(path);
    } catch (e) {
      if (!isAbsent(e)) throw ioError(`reading VM ${id}'s record ${path}`, e);
      throw await this.#notFound(id);
    }
    try {
      return JSON.parse(text) as VmRecord;
    } catch (e) {
      throw new KilnError('driver_error', `VM ${id}'s record ${path} is damaged: ${(e as Error).message}`, {
        cause: e,
      });
    }
  }

  /** `not_found` for a VM without a record; the message names a process of it that still runs. */
  async #notFound(id: string): Promise<KilnError> {
    const live = await this.#processes(id);
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
    return this.#procAlive(rec.pid, rec.pidStartTime, rec.id);
  }

  /**
   * Whether `pid` is still the process that was recorded (same start time; 0 = any). False only
   * on a positive observation: no such process, a zombie, another start time (a recycled pid).
   * A /proc read that fails otherwise throws a `driver_error`.
   */
  #procAlive(pid: number, startTime: number, id: string): boolean {
    try {
      process.kill(pid, 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false; // ESRCH: no such process
    }
    let text: string;
    try {
      text = this.#o.io.readFileSync(`/proc/${pid}/stat`);
    } catch (e) {
      if (isAbsent(e)) return false;
      throw ioError(`checking VM ${id}'s QEMU process ${pid} (/proc/${pid}/stat)`, e);
    }
    const st = parseProcStat(text);
    if (st.state === 'Z' || st.state === 'X') return false;
    return startTime === 0 || st.startTime === startTime;
  }

  /** /proc/PID/stat's start time of a process just started (0 when it is already gone). */
  #startTime(pid: number): number {
    try {
      return parseProcStat(this.#o.io.readFileSync(`/proc/${pid}/stat`)).startTime;
    } catch (e) {
      if (isAbsent(e)) return 0;
      throw ioError(`reading /proc/${pid}/stat of a new QEMU`, e);
    }
  }

  /** Polls until the process is gone (true) or the time is up (false). */
  async #waitGone(pid: number, startTime: number, id: string, timeoutMs: number): Promise<boolean> {
    const end = Date.now() + timeoutMs;
    while (this.#procAlive(pid, startTime, id)) {
      if (Date.now() >= end) return false;
      await sleep(20);
    }
    return true;
  }

  /**
   * Live QEMU processes of THIS run directory, found by their command line: `-name kiln-<id>`
   * and `-pidfile <runDir>/<id>/qemu.pid` (so another daemon's or test's VMs never match), run
   * by this driver's QEMU binary. Works when the VM's directory is gone.
   */
  async #processes(onlyId?: string): Promise<{ id: string; pid: number; startTime: number }[]> {
    const io = this.#o.io;
    let entries: string[];
    try {
      entries = await io.readdir('/proc');
    } catch (e) {
      throw ioError('listing processes (/proc)', e);
    }
    const exe = basename(this.#o.qemuBinary);
    const runDir = resolve(this.#o.runDir);
    const out: { id: string; pid: number; startTime: number }[] = [];
    for (const ent of entries) {
      if (!/^\d+$/.test(ent)) continue;
      let argv: string[];
      let stat: string;
      try {
        argv = io.readFileSync(`/proc/${ent}/cmdline`).split('\0');
        if (basename(argv[0] ?? '') !== exe) continue;
        stat = io.readFileSync(`/proc/${ent}/stat`);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (isAbsent(e) || code === 'EACCES' || code === 'EPERM') continue; // gone, or not ours
        throw ioError(`reading /proc/${ent}`, e);
      }
      const arg = (flag: string): string | undefined => {
        const i = argv.indexOf(flag);
        return i < 0 ? undefined : argv[i + 1];
      };
      const name = arg('-name');
      if (!name?.startsWith('kiln-')) continue;
      const id = name.slice('kiln-'.length);
      if (onlyId !== undefined && id !== onlyId) continue;
      const pidFile = arg('-pidfile');
      if (pidFile === undefined || resolve(pidFile) !== join(runDir, id, FILES.pid)) continue;
      const st = parseProcStat(stat);
      if (st.state === 'Z' || st.state === 'X') continue;
      out.push({ id, pid: Number(ent), startTime: st.startTime });
    }
    return out;
  }

  /** SIGKILLs every process of VM `id` found by command line; throws unless all are gone. */
  async #killProcesses(id: string): Promise<number[]> {
    const live = await this.#processes(id);
    for (const p of live) killQuiet(p.pid);
    for (const p of live) {
      if (!(await this.#waitGone(p.pid, p.startTime, id, 5000)))
        throw new KilnError('driver_error', `QEMU pid ${p.pid} of VM ${id} survived SIGKILL`);
    }
    return live.map((p) => p.pid);
  }

  /** Remembers the VM's last disk I/O error (QMP BLOCK_IO_ERROR), to say why QEMU stopped it. */
  #watch(id: string, q: QmpClient): void {
    q.on('event', (e) => {
      if (e.event !== 'BLOCK_IO_ERROR') return;
      const d = e.data ?? {};
      const err = {
        nospace: d['nospace'] === true,
        reason: typeof d['reason'] === 'string' ? d['reason'] : 'I/O error',
        operation: typeof d['operation'] === 'string' ? d['operation'] : 'write',
      };
      this.#ioErrors.set(id, err);
      this.#log.warn({ vmId: id, ...err, action: d['action'] }, 'QEMU reports a disk I/O error');
    });
  }

  #client(id: string): Promise<QmpClient> {
    let c = this.#qmp.get(id);
    if (!c) {
      c = QmpClient.connect(join(this.#dir(id), FILES.qmp)).then((q) => {
        this.#watch(id, q);
        q.once('close', () => this.#qmp.delete(id));
        return q;
      });
      c.catch(() => this.#qmp.delete(id));
      this.#qmp.set(id, c);
    }
    return c;
  }

  #forget(id: string): void {
    const c = this.#qmp.get(id);
    this.#qmp.delete(id);
    c?.then((q) => {
      q.close();
    }).catch(() => undefined);
  }

  #info(rec: VmRecord, state: VmState, fault?: VmInfo['fault']): VmInfo {
    return {
      ...(fault ? { fault } : {}),
      id: rec.id,
      state,
      pid: rec.pid,
      accel: rec.accel,
      hostAddr: rec.hostAddr ?? '127.0.0.1',
      ports: rec.ports,
      dir: this.#dir(rec.id),
      overlay: join(this.#dir(rec.id), rec.overlay ?? FILES.overlay),
      serialLog: join(this.#dir(rec.id), FILES.serial),
      startedAt: rec.startedAt,
    };
  }

  async #state(rec: VmRecord): Promise<VmState> {
    return (await this.#runState(rec)).state;
  }

  async #runState(rec: VmRecord): Promise<{ state: VmState; fault?: VmInfo['fault'] }> {
    if (!this.#alive(rec)) return { state: 'stopped' };
    try {
      const q = await this.#client(rec.id);
      const s = await q.execute<{ status: string; running: boolean }>('query-status', undefined, {
        timeoutMs: 5000,
      });
      if (s.running) return { state: 'running' };
      if (s.status === 'shutdown' || s.status === 'guest-panicked' || s.status === 'internal-error')
        return { state: 'stopped' };
      // QEMU's default werror=enospc stops the VM when a write to its disk fails for lack of space.
      if (s.status === 'io-error') return { state: 'paused', fault: await this.#ioFault(rec.id, q) };
      return { state: 'paused' };
    } catch (e) {
      if (!this.#alive(rec)) return { state: 'stopped' };
      throw e;
    }
  }

  /** Why QEMU stopped a VM on a disk error: the last BLOCK_IO_ERROR event and query-block's io-status. */
  async #ioFault(id: string, q: QmpClient): Promise<NonNullable<VmInfo['fault']>> {
    const ev = this.#ioErrors.get(id);
    const blocks = await q
      .execute<{ device: string; 'io-status'?: string }[]>('query-block', undefined, { timeoutMs: 5000 })
      .catch(() => []);
    const nospace = ev?.nospace === true || blocks.some((b) => b['io-status'] === 'nospace');
    const reason = ev?.reason ?? (nospace ? 'No space left on device' : 'I/O error');
    return {
      kind: 'io_error',
      nospace,
      message: `QEMU stopped the VM: a ${ev?.operation ?? 'write'} to its disk failed (${reason})`,
    };
  }

  async status(id: string): Promise<VmInfo> {
    const rec = await this.#record(id);
    const st = await this.#runState(rec);
    return this.#info(rec, st.state, st.fault);
  }

  async consoleTail(id: string, maxLines = 30): Promise<string[]> {
    validateName('id', id);
    const path = join(this.#dir(id), FILES.serial);
    let text: string;
    try {
      text = await this.#o.io.readTail(path, 64 * 1024);
    } catch (e) {
      if (!isAbsent(e)) throw ioError(`reading VM ${id}'s console log ${path}`, e);
      if (!(await this.#dirExists(id))) throw new KilnError('not_found', `VM ${id} does not exist`);
      return [];
    }
    return text
      .split(/\r?\n/)
      .map(printable)
      .filter((l) => l !== '')
      .slice(-maxLines);
  }

  async #dirExists(id: string): Promise<boolean> {
    try {
      return await this.#o.io.exists(this.#dir(id));
    } catch (e) {
      throw ioError(`looking for VM ${id}'s directory`, e);
    }
  }

  async pause(id: string, opts: OpOpts = {}): Promise<void> {
    const rec = await this.#record(id);
    const state = await this.#state(rec);
    if (state !== 'running')
      throw new KilnError('invalid_state', `VM ${id} is ${state}; pause needs running`);
    await (await this.#client(id)).execute('stop', undefined, { timeoutMs: opts.timeoutMs ?? 10_000 });
  }

  async resume(id: string, opts: OpOpts = {}): Promise<void> {
    const rec = await this.#record(id);
    const state = await this.#state(rec);
    if (state !== 'paused') throw new KilnError('invalid_state', `VM ${id} is ${state}; resume needs paused`);
    const q = await this.#client(id);
    // A save still streaming out would stop the VM again when it completes: cancel it first.
    const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
    for (;;) {
      const m = await q.execute<{ status?: string }>('query-migrate');
      if (!m.status || !['setup', 'active', 'pre-switchover', 'device', 'cancelling'].includes(m.status))
        break;
      if (m.status !== 'cancelling') await q.execute('migrate_cancel');
      if (Date.now() > deadline) throw new KilnError('timeout', `VM ${id}: an outgoing save would not stop`);
      await sleep(5);
    }
    await q.execute('cont', undefined, { timeoutMs: opts.timeoutMs ?? 10_000 });
  }

  async stop(id: string, opts: StopOpts = {}): Promise<void> {
    const rec = await this.#record(id);
    const log = this.#log.child({ vmId: id });
    if (this.#alive(rec)) {
      const graceMs = opts.timeoutMs ?? 5000;
      try {
        const q = await this.#client(id);
        await q.execute('quit', undefined, { timeoutMs: graceMs }).catch((e: unknown) => {
          // QEMU may close the socket before answering `quit`; that is success.
          if (this.#alive(rec)) throw e;
        });
      } catch (e) {
        log.warn({ err: e }, 'graceful quit failed; escalating');
      }
      if (!(await this.#waitGone(rec.pid, rec.pidStartTime, id, graceMs))) {
        log.warn({ pid: rec.pid }, 'qemu ignored quit; sending SIGKILL');
        killQuiet(rec.pid);
        if (!(await this.#waitGone(rec.pid, rec.pidStartTime, id, 5000))) {
          throw new KilnError('driver_error', `QEMU pid ${rec.pid} of VM ${id} survived SIGKILL`);
        }
      }
    }
    if (opts.keepOverlayAs) {
      // The disk as the VM left it becomes someone else's (a template's frozen layer).
      await rename(join(this.#dir(id), rec.overlay ?? FILES.overlay), opts.keepOverlayAs);
      this.#failpoint?.('qemu', 'overlay kept');
    }
    await this.#cleanup(id);
    log.info('vm stopped');
  }

  async kill(id: string): Promise<void> {
    let rec: VmRecord | undefined;
    try {
      rec = await this.#record(id);
    } catch (e) {
      if (!(e instanceof KilnError && e.code === 'not_found')) throw e;
    }
    if (rec) {
      if (this.#alive(rec)) {
        killQuiet(rec.pid);
        if (!(await this.#waitGone(rec.pid, rec.pidStartTime, id, 5000))) {
          throw new KilnError('driver_error', `QEMU pid ${rec.pid} of VM ${id} survived SIGKILL`);
        }
      }
    } else {
      // No record: a start that crashed half-way, or a directory removed under a running VM.
      // Its process is found by command line.
      const dirExists = await this.#dirExists(id);
      const pids = await this.#killProcesses(id);
      if (!dirExists && pids.length === 0)
        throw new KilnError('not_found', `VM ${id} does not exist`, { details: { id } });
      if (pids.length) this.#log.warn({ vmId: id, pids }, 'killed a VM process that had no record');
    }
    await this.#cleanup(id);
  }

  /** Forgets the VM and removes its directory: only once its process is known to be gone. */
  async #cleanup(id: string): Promise<void> {
    this.#forget(id);
    this.#ioErrors.delete(id);
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
    for (const p of await this.#processes()) ids.add(p.id);
    return [...ids].sort();
  }

  async close(): Promise<void> {
    for (const id of [...this.#qmp.keys()]) this.#forget(id);
    await sleep(0);
  }
}

/** The file the VM's root disk writes to now (QMP query-block). */
async function activeImage(q: QmpClient): Promise<string> {
  const blocks =
    await q.execute<{ device: string; inserted?: { image: { filename: string } } }[]>('query-block');
  const file = blocks.find((b) => b.device === 'root')?.inserted?.image.filename;
  if (!file) throw new KilnError('driver_error', 'QEMU reports no root disk');
  return file;
}

/** Removes group and other bits from files that exist (QEMU made them under its own umask). */
async function privateFiles(paths: (string | undefined)[]): Promise<void> {
  for (const p of paths) if (p) await chmod(p, 0o600).catch(() => undefined);
}

/** A console line without terminal escapes and control characters. */
function printable(line: string): string {
  /* eslint-disable no-control-regex -- removing control characters is the point */
  return line
    .replace(/\u001b\[[0-9;?]*[A-Za-z]/g, '')
    .replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, '')
    .trimEnd();
  /* eslint-enable no-control-regex */
}

/** Quotes a path for the shell QEMU runs `exec:` migration URIs with. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function killQuiet(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}
