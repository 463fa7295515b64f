/**
 * Fixtures shared by the daemon's and the API's unit tests (no VM): the fake guest image, a
 * guest agent that answers at once and records what it is told, a SandboxService over the fake
 * driver in its own temp dir, and a snapshot archive staged by hand. Test code only.
 */
import { VolumeService } from '../volumes/volume-service.ts';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KilnError } from '../../core/errors.ts';
import { nullLogger } from '../../core/log.ts';
import { SqliteStore } from '../../store/sqlite-store.ts';
import type { StopOpts } from '../../vmm/driver.ts';
import { FakeDriver, type FakeWorld } from '../../vmm/fake-driver.ts';
import type { ExecOpts, ExecResult, GuestClient, GuestMetrics, InitBody } from '../guest-client.ts';
import { SandboxService, type SandboxServiceDeps } from '../sandbox-service.ts';
import type { EgressEnforcer, OpCtx } from '../sandbox/types.ts';
import type { EgressRules } from '../../core/network-policy.ts';
import {
  ARCHIVE_FILES,
  ARCHIVE_FORMAT,
  MANIFEST,
  artifact,
  type ArchiveManifest,
} from '../snapshot-archive.ts';

/** The boot files of the fake image (the fake driver never reads them). */
export const FAKE_IMAGE = {
  key: 'img-1',
  kernel: '/img/vmlinuz',
  initrd: '/img/initrd.img',
  rootfs: '/img/rootfs.ext4',
};

/** The fixed clock's start, for fixtures that have one. */
export const NOW = Date.parse('2026-06-01T00:00:00Z');

/** What every fake guest's /metrics answers. */
const [MiB, GiB] = [2 ** 20, 2 ** 30];
export const GUEST_METRICS: GuestMetrics = {
  ts: 1_700_000_000,
  cpu_count: 1,
  cpu_used_pct: 7.5,
  mem_total: 512 * MiB,
  mem_used: 100 * MiB,
  mem_cache: 3 * MiB,
  disk_used: GiB,
  disk_total: 2 * GiB,
};

/**
 * The guest agents of one service: each answers at once and records every /init (the body and
 * the token it presented). The switches make every agent refuse /init or stop answering.
 * `exec` streams `ran <cmd>` to stdout and exits 4 when the command names `fail`, else 0; with
 * `stdin` it is `cat`.
 */
export class FakeGuests {
  inits: { body: InitBody; presented: string | undefined }[] = [];
  /** Every command run without stdin, and the token its client presented. */
  execs: { cmd: string; presented: string | undefined }[] = [];
  uploads: { path: string; bytes: number }[] = [];
  failInit = false;
  /** Every guest agent stopped answering /health. */
  hung = false;
  #nextPid = 100;
  readonly #stdins = new Map<number, { chunks: Buffer[]; closed: () => void }>();

  /** A command with stdin behaves as `cat`: what `writeStdin` gives it comes back on stdout. */
  async #catExec(o: ExecOpts): Promise<ExecResult> {
    const pid = this.#nextPid++;
    const chunks: Buffer[] = [];
    const closed = new Promise<void>((r) => this.#stdins.set(pid, { chunks, closed: r }));
    o.onStart?.(pid);
    await closed;
    this.#stdins.delete(pid);
    const all = Buffer.concat(chunks);
    for (let i = 0; i < all.length; i += 64 << 10) await o.onStdout?.(all.subarray(i, i + (64 << 10)));
    return { exitCode: 0, stdout: '', stderr: '', status: 'exit status 0' };
  }
  /** /health probes asked, answered or not. */
  probes = 0;

  /** The service's `guest` dependency. */
  readonly client = (o: { accessToken?: string } = {}): GuestClient => ({
    health: () =>
      ++this.probes && this.hung
        ? Promise.reject(
            new KilnError('guest_agent_error', 'did not answer /health: no answer within 3000 ms'),
          )
        : Promise.resolve(),
    init: (body, presented) => {
      if (this.failInit) return Promise.reject(new Error('agent said no'));
      this.inits.push({ body, presented });
      return Promise.resolve({ entropy: body.entropySeed ? 'reseeded' : undefined });
    },
    exec: (cmd, eo) => {
      if (eo?.stdin) return this.#catExec(eo);
      this.execs.push({ cmd, presented: o.accessToken });
      return Promise.resolve(fakeExec(cmd, eo));
    },
    writeStdin: async (pid, input) => {
      const p = this.#stdins.get(pid);
      if (!p) return { ended: true };
      for await (const c of input) p.chunks.push(Buffer.from(c));
      p.closed();
      return { ended: false };
    },
    upload: async (path, body) => {
      let bytes = 0;
      for await (const c of body) bytes += (c as Buffer).length;
      this.uploads.push({ path, bytes });
    },
    metrics: () => Promise.resolve(GUEST_METRICS),
  });
}

/**
 * Fake guests whose command containing "block" runs until its stream is cancelled (then rejects
 * with `cancelled`, as a dropped stream does); `running` resolves once such a command runs.
 */
export function blockingGuests(): { guest: SandboxServiceDeps['guest']; running: Promise<void> } {
  let blocked: () => void = () => undefined;
  const running = new Promise<void>((r) => (blocked = r));
  const fakes = new FakeGuests();
  const guest: SandboxServiceDeps['guest'] = () => {
    const g = fakes.client();
    return {
      ...g,
      exec: (cmd, eo) =>
        cmd.includes('block')
          ? new Promise((_resolve, reject) => {
              blocked();
              eo?.signal?.addEventListener('abort', () => {
                reject(new KilnError('cancelled', `command cancelled: ${cmd}`));
              });
            })
          : g.exec(cmd, eo),
    };
  };
  return { guest, running };
}

function fakeExec(cmd: string, o?: ExecOpts): ExecResult {
  const stdout = `ran ${cmd}\n`;
  void o?.onStdout?.(new TextEncoder().encode(stdout));
  const exitCode = cmd.includes('fail') ? 4 : 0;
  return { exitCode, stdout, stderr: '', status: `exit status ${exitCode}` };
}

/**
 * The network layer's rule setter (`deps.egress`): records every apply, in order; `fail` makes
 * the next applies reject (as an nftables error would).
 */
export class FakeEgress implements EgressEnforcer {
  applied: { sandboxId: string; egress: EgressRules }[] = [];
  fail = false;

  apply(sandboxId: string, egress: EgressRules): Promise<void> {
    if (this.fail) return Promise.reject(new KilnError('internal', `nft refused the rules of ${sandboxId}`));
    this.applied.push({ sandboxId, egress });
    return Promise.resolve();
  }
}

export interface ServiceFixtureOpts {
  /** A fixed clock (ms) the test moves through `fixture.now`; without it, the wall clock. */
  now?: number;
  /** Build the template `base` (512 MiB, 1 vCPU) before the test. */
  base?: boolean;
  /** More of the service's dependencies. */
  deps?: Partial<SandboxServiceDeps>;
}

/** A SandboxService over the fake driver, its SQLite store and data in a fresh temp dir. */
export class ServiceFixture {
  readonly world: FakeWorld = new Map();
  readonly driver = new FakeDriver(this.world);
  readonly guests = new FakeGuests();
  /** The fixed clock, when the fixture has one. */
  now: number;
  deps!: SandboxServiceDeps;
  /** CPU time (ms) of the fake VMs' processes, by pid, as `deps.vmCpuMs` reads it. */
  readonly vmCpuMs = new Map<number, number>();
  svc!: SandboxService;
  store!: SqliteStore;
  dir = '';

  private constructor(now: number | undefined) {
    this.now = now ?? 0;
  }

  static async start(o: ServiceFixtureOpts = {}): Promise<ServiceFixture> {
    const f = new ServiceFixture(o.now);
    f.dir = await mkdtemp(join(tmpdir(), 'kiln-svc-'));
    f.store = new SqliteStore(join(f.dir, 'state.db'));
    f.deps = {
      store: f.store,
      driver: f.driver,
      guest: f.guests.client,
      image: () => Promise.resolve(FAKE_IMAGE),
      dataDir: f.dir,
      log: nullLogger,
      ...(o.now === undefined ? {} : { now: () => f.now }),
      volumes: new VolumeService({ store: f.store, dataDir: f.dir, log: nullLogger }),
      // The fake VMs' CPU time (ms) by pid: none unless a test sets it.
      vmCpuMs: (pid) => f.vmCpuMs.get(pid),
      ...o.deps,
    };
    f.svc = new SandboxService(f.deps);
    if (o.base) await f.buildBase({ opId: 'req-t' });
    return f;
  }

  /** Builds the template `base` of the fake image: 512 MiB, 1 vCPU. */
  buildBase(ctx: OpCtx = {}): ReturnType<SandboxService['buildTemplate']> {
    return this.svc.buildTemplate('base', FAKE_IMAGE, { memoryMiB: 512, vcpus: 1 }, ctx);
  }

  /** Another service over the same store and VMs, as after a daemon restart. */
  restarted(deps: Partial<SandboxServiceDeps> = {}): SandboxService {
    return new SandboxService({ ...this.deps, driver: new FakeDriver(this.world), ...deps });
  }

  async close(): Promise<void> {
    for (const id of await this.driver.list()) await this.driver.kill(id);
    this.store.close();
    await rm(this.dir, { recursive: true, force: true });
  }
}

export type ArchiveKind = keyof typeof ARCHIVE_FILES;

/**
 * Stages an archive's files in `src` by hand: each file gets `content(kind)` (undefined: the
 * test wrote it already), then a manifest of their hashes over `snapshot`. Returns the manifest.
 */
export async function stageArchive(
  src: string,
  snapshot: Partial<ArchiveManifest['snapshot']> = {},
  content: (kind: ArchiveKind) => string | Buffer | undefined = (kind) => kind,
): Promise<ArchiveManifest> {
  const files = [];
  for (const [kind, name] of Object.entries(ARCHIVE_FILES) as [ArchiveKind, string][]) {
    const body = content(kind);
    if (body !== undefined) await writeFile(join(src, name), body);
    files.push(await artifact(src, kind, name));
  }
  const manifest: ArchiveManifest = {
    format: ARCHIVE_FORMAT,
    snapshot: {
      id: 'snap-1',
      name: null,
      memoryMiB: 512,
      vcpus: 1,
      guestToken: null,
      templateName: 'base',
      imageKey: FAKE_IMAGE.key,
      createdAt: '2026-01-01T00:00:00.000Z',
      ...snapshot,
    },
    files,
  };
  await writeFile(join(src, MANIFEST), JSON.stringify(manifest));
  return manifest;
}

/**
 * A driver whose `stop` gets as far as a pause's kept layer (QEMU exited, the overlay kept) and
 * then never returns, the VM `stopped`: the daemon died before cleaning up (crash tests).
 */
export class DiesInStop extends FakeDriver {
  override async stop(id: string, opts: StopOpts = {}): Promise<void> {
    if (opts.keepOverlayAs) await writeFile(opts.keepOverlayAs, `fake disk of ${id}`);
    this.crash(id);
    return new Promise(() => undefined);
  }
}
