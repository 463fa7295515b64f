import { createServer, type Server } from 'node:http';
import {
  createServer as createTcpServer,
  type AddressInfo,
  type Server as TcpServer,
  type Socket,
} from 'node:net';
import { KilnError, invalidArgument } from '../core/errors.ts';
import { validateMemoryMiB, validateName, validatePublishedPort, validateVcpus } from '../core/validate.ts';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { basename } from 'node:path';
import {
  AGENT_PORT,
  MACHINE_REVISION,
  validateMachine,
  type DiskLayers,
  type Endpoint,
  type OpOpts,
  type SaveStateResult,
  type StopOpts,
  type VmInfo,
  type VmmCapabilities,
  type VmmDriver,
  type VmSpec,
  type VmState,
} from './driver.ts';

export type FakeWorld = Map<string, FakeVm>;

/** A published port of a fake VM: its loopback listener and the connections it took. */
interface Published {
  server: TcpServer;
  endpoint: Endpoint;
  sockets: Set<Socket>;
}

interface FakeVm {
  info: VmInfo;
  servers: Server[];
  /** The layer its disk was last frozen into (a repeat for the same layer is a no-op). */
  frozenInto: string | undefined;
  /** What the guest wrote to its console (see `crash`). */
  console: string[];
  /** Its runtime directory was removed while the "process" runs (see `loseDir`). */
  dirLost: boolean;
  /** The disk layer (or rootfs) its writable layer sits on. */
  layer: string;
  /** Published guest ports (`exposePort`): a loopback listener each. */
  published: Map<number, Promise<Published>>;
}

/** A fake disk layer file: this line naming the layer it sits on; anything else is standalone. */
const FAKE_LAYER = 'fake layer over ';
/** A standalone fake disk written by `exportStandalone`: this line with its guest size. */
const FAKE_STANDALONE = /^fake standalone disk of (\d+) bytes$/;
/** The guest disk size of a chain whose bottom file does not exist (fake images). */
const FAKE_DISK_BYTES = 64 * 1024;

function firstLine(path: string): string {
  return readFileSync(path, 'utf8').split('\n', 1)[0] ?? '';
}

/** A fake chain's guest size: its bottom file's size (FAKE_DISK_BYTES when that does not exist). */
function fakeVirtualSize(layer: string): number {
  const size = statSync(layer).size;
  const head = firstLine(layer);
  if (head.startsWith(FAKE_LAYER)) {
    const base = head.slice(FAKE_LAYER.length);
    return existsSync(base) ? fakeVirtualSize(base) : FAKE_DISK_BYTES;
  }
  return Number(FAKE_STANDALONE.exec(head)?.[1] ?? size);
}

/** Disk layers of the fake: plain files; a layer made over another names it on its first line. */
const fakeDiskLayers: DiskLayers = {
  virtualSize: fakeVirtualSize,
  maxWritableBytes: (virtualBytes) => virtualBytes + 2 ** 20,
  writtenBytes: () => 0,
  async flatten(layer, base, out) {
    await readFile(layer);
    await writeFile(out, `${FAKE_LAYER}${base}\n`, { flag: 'wx' });
  },
  async exportStandalone(layer, out) {
    await writeFile(out, `fake standalone disk of ${fakeVirtualSize(layer)} bytes\n`, { flag: 'wx' });
  },
  async verifyImported(path) {
    const head = (await readFile(path, 'utf8')).split('\n', 1)[0] ?? '';
    if (head.startsWith(FAKE_LAYER))
      throw invalidArgument(
        'archive',
        `${basename(path)} must be a standalone disk layer; it sits on ${head.slice(FAKE_LAYER.length)}`,
      );
  },
};

/** Like QEMU's forward: the host side accepts; a guest port nobody listens on drops the connection. */
async function publish(vm: FakeVm, guest: () => Server | undefined): Promise<Published> {
  const sockets = new Set<Socket>();
  const server = createTcpServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    const inGuest = guest();
    if (inGuest) inGuest.emit('connection', sock);
    else sock.destroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    server,
    endpoint: { host: vm.info.agent.host, port: (server.address() as AddressInfo).port },
    sockets,
  };
}

/**
 * An in-memory `VmmDriver` for unit tests of the layers above: no processes, but each "VM" serves
 * `GET /health` (204) on a real loopback port per guest port, so readiness code paths run. It
 * obeys the same contract suite as the QEMU driver. Never a stand-in for a real VM in an
 * integration test.
 */
export class FakeDriver implements VmmDriver {
  readonly #vms: Map<string, FakeVm>;
  #nextPid = 10_000;
  /** While set, every call fails as a host read would with this errno (see `failIo`). */
  #ioFailure: string | undefined;
  /** What "listens" in the guests, by `<vm id>:<guest port>` (see `serveGuestPort`). */
  readonly #guestServers = new Map<string, Server>();

  /** Instances sharing one `world` model a second process re-attaching to the same VMs. */
  constructor(world: FakeWorld = new Map()) {
    this.#vms = world;
  }

  readonly disks: DiskLayers = fakeDiskLayers;

  capabilities(): VmmCapabilities {
    return { memorySnapshots: true, cowRamSharing: true, liveDiskFreeze: true };
  }

  async start(spec: VmSpec, _opts?: OpOpts): Promise<VmInfo> {
    validateName('id', spec.id);
    validateMachine(spec.machine);
    validateMemoryMiB(spec.resources.memoryMiB);
    validateVcpus(spec.resources.vcpus);
    const files: [string, string | undefined][] = [
      ['kernel', spec.boot.kernel],
      ['initrd', spec.boot.initrd],
      ['rootfs', spec.boot.rootfs],
      ['diskLayer', spec.diskLayer],
      ['ramFile', spec.ramFile],
      ['restore.snapshot.stateFile', spec.restore?.snapshot.stateFile],
    ];
    for (const [field, path] of files) {
      if (path !== undefined && !path.startsWith('/'))
        throw invalidArgument(field, `must be an absolute path, got "${path}"`);
    }
    if (spec.boot.kernel.includes('missing'))
      throw new KilnError('not_found', `kernel ${spec.boot.kernel} does not exist`);
    if (this.#vms.has(spec.id)) throw new KilnError('already_exists', `VM ${spec.id} already exists`);
    if (spec.restore) {
      const saved = await readFile(spec.restore.snapshot.stateFile, 'utf8').catch((e: unknown) => {
        throw new KilnError(
          'not_found',
          `restore.snapshot.stateFile ${spec.restore?.snapshot.stateFile} does not exist`,
          { cause: e },
        );
      });
      // As QEMU: state saved from one machine does not load into another (its devices differ).
      const from = (JSON.parse(saved.startsWith('{') ? saved : '{}') as { machine?: number }).machine;
      const to = spec.machine ?? MACHINE_REVISION;
      if (from !== undefined && from !== to)
        throw new KilnError('driver_error', `the state was saved from machine revision ${from}, not ${to}`);
    }
    if (spec.ramFile && !spec.restore?.snapshot.ramFile)
      await writeFile(spec.ramFile, `fake RAM of ${spec.id}`);
    const servers: Server[] = [];
    const endpoints: Record<number, Endpoint> = {};
    for (const gp of new Set([AGENT_PORT, ...(spec.network.guestPorts ?? [])])) {
      const srv = createServer((req, res) => res.writeHead(req.url === '/health' ? 204 : 404).end());
      await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
      servers.push(srv);
      endpoints[gp] = { host: '127.0.0.1', port: (srv.address() as AddressInfo).port };
    }
    const info: VmInfo = {
      id: spec.id,
      state: spec.restore?.paused ? 'paused' : 'running',
      pid: this.#nextPid++,
      accel: 'tcg',
      machine: spec.machine ?? MACHINE_REVISION,
      agent: endpoints[AGENT_PORT] ?? { host: '127.0.0.1', port: 0 },
      endpoints,
      dir: `/fake/${spec.id}`,
      overlay: `/fake/${spec.id}/overlay.qcow2`,
      serialLog: `/fake/${spec.id}/serial.log`,
      startedAt: new Date().toISOString(),
      ...(spec.network.namespace ? { namespace: spec.network.namespace.path } : {}),
    };
    this.#vms.set(spec.id, {
      info,
      servers,
      frozenInto: undefined,
      console: [],
      dirLost: false,
      layer: spec.diskLayer ?? spec.boot.rootfs,
      published: new Map(),
    });
    return { ...info };
  }

  #get(id: string): FakeVm {
    validateName('id', id);
    this.#checkIo();
    const vm = this.#vms.get(id);
    if (!vm) throw new KilnError('not_found', `VM ${id} does not exist`);
    if (vm.dirLost)
      throw new KilnError(
        'not_found',
        `VM ${id} has no record but its process ${vm.info.pid} still runs; it can only be killed`,
        { details: { id, pids: [vm.info.pid] } },
      );
    return vm;
  }

  #checkIo(): void {
    if (this.#ioFailure)
      throw new KilnError(
        'driver_error',
        `reading VM state failed (${this.#ioFailure}); the VM's state is unknown`,
      );
  }

  async status(id: string): Promise<VmInfo> {
    await Promise.resolve();
    return { ...this.#get(id).info };
  }

  async consoleTail(id: string, maxLines = 30): Promise<string[]> {
    await Promise.resolve();
    return this.#get(id).console.slice(-maxLines);
  }

  async #transition(id: string, from: VmState, to: VmState, action: string): Promise<void> {
    await Promise.resolve();
    const vm = this.#get(id);
    if (vm.info.state !== from) {
      throw new KilnError('invalid_state', `VM ${id} is ${vm.info.state}; ${action} needs ${from}`);
    }
    vm.info.state = to;
  }

  async exposePort(id: string, guestPort: number): Promise<Endpoint> {
    validatePublishedPort('port', guestPort);
    const vm = this.#get(id);
    if (vm.info.state === 'stopped')
      throw new KilnError('invalid_state', `VM ${id} is stopped; exposing a port needs running or paused`);
    let pub = vm.published.get(guestPort);
    if (!pub) {
      pub = publish(vm, () => this.#guestServers.get(`${id}:${guestPort}`));
      vm.published.set(guestPort, pub);
    }
    return { ...(await pub).endpoint };
  }

  /**
   * Test hook: `server` (not listening itself) answers what reaches guest port `guestPort` of VM
   * `id` (also of a later VM with that id: a restored one) through a published port, as a
   * server started by the guest's image would.
   */
  serveGuestPort(id: string, guestPort: number, server: Server): void {
    this.#guestServers.set(`${id}:${guestPort}`, server);
  }

  pause(id: string): Promise<void> {
    return this.#transition(id, 'running', 'paused', 'pause');
  }

  async resume(id: string): Promise<void> {
    await this.#transition(id, 'paused', 'running', 'resume');
    delete this.#get(id).info.fault;
  }

  async saveState(id: string, stateFile: string): Promise<SaveStateResult> {
    const vm = this.#get(id);
    if (vm.info.state === 'stopped')
      throw new KilnError('invalid_state', `VM ${id} is stopped; saving needs running or paused`);
    vm.info.state = 'paused';
    const body = JSON.stringify({ fake: true, id, machine: vm.info.machine });
    await writeFile(stateFile, body);
    return { pauseMs: 0, bytes: body.length };
  }

  async freezeDisk(id: string, layerPath: string): Promise<void> {
    const vm = this.#get(id);
    if (vm.info.state !== 'paused')
      throw new KilnError('invalid_state', `VM ${id} is ${vm.info.state}; freezing its disk needs paused`);
    if (vm.frozenInto === layerPath) return; // a repeat (after a crash): already done
    vm.frozenInto = layerPath;
    await writeFile(layerPath, `${FAKE_LAYER}${vm.layer}\n`, { flag: 'wx' }).catch((e: unknown) => {
      throw (e as NodeJS.ErrnoException).code === 'EEXIST'
        ? new KilnError('already_exists', `${layerPath} already exists`)
        : e;
    });
    vm.layer = layerPath;
    vm.info.overlay = `${vm.info.dir}/overlay-${Date.now()}.qcow2`;
  }

  /** Test hook: the "process" dies, having written `console` to its console. */
  crash(id: string, console: string[] = []): void {
    const vm = this.#get(id);
    vm.info.state = 'stopped';
    vm.console.push(...console);
  }

  /** Test hook: the guest writes `console` to its console and its "process" goes on. */
  write(id: string, console: string[]): void {
    this.#get(id).console.push(...console);
  }

  /** Test hook: the hypervisor stops the vCPUs on a failed disk write (`nospace`: the host's disk is full). */
  ioError(id: string, nospace = true): void {
    const vm = this.#get(id);
    vm.info.state = 'paused';
    vm.info.fault = {
      kind: 'io_error',
      nospace,
      message: `QEMU stopped the VM: a write to its disk failed (${nospace ? 'No space left on device' : 'Input/output error'})`,
    };
  }

  /** Test hook: the VM's runtime directory is removed while its process runs on. */
  loseDir(id: string): void {
    this.#get(id).dirLost = true;
  }

  /** Test hook: host reads fail with `errno` (e.g. EMFILE) until called with undefined. */
  failIo(errno: string | undefined): void {
    this.#ioFailure = errno;
  }

  /** Test hook: whether the "process" of VM `id` still exists (even without its directory). */
  processAlive(id: string): boolean {
    const vm = this.#vms.get(id);
    return vm !== undefined && vm.info.state !== 'stopped';
  }

  async stop(id: string, opts: StopOpts = {}): Promise<void> {
    const vm = this.#get(id);
    if (opts.keepOverlayAs) await writeFile(opts.keepOverlayAs, `${FAKE_LAYER}${vm.layer}\n`);
    for (const s of vm.servers) await new Promise((r) => s.close(r));
    // The "process" ends: connections through its published ports end with it.
    for (const pub of vm.published.values()) {
      const p = await pub;
      for (const sock of p.sockets) sock.destroy();
      await new Promise((r) => p.server.close(r));
    }
    this.#vms.delete(id);
  }

  async kill(id: string): Promise<void> {
    validateName('id', id);
    this.#checkIo();
    const vm = this.#vms.get(id);
    if (vm?.dirLost) vm.dirLost = false; // found by its command line, killed
    await this.stop(id);
  }

  async list(): Promise<string[]> {
    await Promise.resolve();
    this.#checkIo();
    return [...this.#vms.keys()].sort();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
