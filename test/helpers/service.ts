/**
 * The wiring every VM test of the sandbox domain needs, in one place: a SandboxService over a
 * SqliteStore and a QemuDriver in the test's own temp root, booting the default image. Each host
 * counts and cleans only its own VMs (the driver's run dir is under its root), so tests and test
 * runs can share a machine.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { KilnError } from '../../src/core/errors.ts';
import { nullLogger } from '../../src/core/log.ts';
import { HttpGuestClient } from '../../src/daemon/guest-client.ts';
import { SandboxService, type BootImage, type SandboxServiceDeps } from '../../src/daemon/sandbox-service.ts';
import { SqliteStore } from '../../src/store/sqlite-store.ts';
import type { OpOpts, VmInfo, VmmDriver, VmSpec } from '../../src/vmm/driver.ts';
import { QemuDriver } from '../../src/vmm/qemu/qemu-driver.ts';
import { ensureDefaultImage } from './image.ts';

/** Options of the service (deadlines, liveness, capacity...), over the host's own wiring. */
export type ServiceOverrides = Partial<SandboxServiceDeps>;

/** The default image as the service takes it. */
export async function defaultBootImage(): Promise<BootImage> {
  const img = await ensureDefaultImage();
  return { key: img.key, kernel: img.kernel, initrd: img.initrd, rootfs: img.rootfs };
}

/** A SandboxService with real guest clients and no log; `image` undefined = a host with no images. */
export function wireService(
  deps: Pick<SandboxServiceDeps, 'store' | 'driver' | 'dataDir'> & { image: BootImage | undefined },
  o: ServiceOverrides = {},
): SandboxService {
  const { image } = deps;
  return new SandboxService({
    store: deps.store,
    driver: deps.driver,
    dataDir: deps.dataDir,
    guest: (g) => new HttpGuestClient(g),
    image: () =>
      image ? Promise.resolve(image) : Promise.reject(new KilnError('not_found', 'this host has no images')),
    log: nullLogger,
    ...o,
  });
}

/** Kills the VMs this driver started (its run dir's only) and closes it. */
export async function closeDriver(driver: VmmDriver): Promise<void> {
  for (const id of await driver.list()) await driver.kill(id);
  await driver.close();
}

/**
 * `driver` with `hook` run after every VM start (before the service goes on): what a test needs
 * to act at an exact point of a create. Every other call goes to `driver` unchanged.
 */
export function afterStart(
  driver: VmmDriver,
  hook: (spec: VmSpec, info: VmInfo) => Promise<void>,
): VmmDriver {
  const start = async (spec: VmSpec, opts?: OpOpts): Promise<VmInfo> => {
    const info = await driver.start(spec, opts);
    await hook(spec, info);
    return info;
  };
  return new Proxy(driver, {
    get(target, prop) {
      if (prop === 'start') return start;
      const v: unknown = Reflect.get(target, prop, target);
      // Bound to the real driver: its methods use private fields.
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

export interface RealHost {
  /** The host's own directory: `state.db`, `vms/` (the driver's run dir), `data/`. */
  readonly root: string;
  /** The image it boots (throws on a host with no images). */
  readonly image: BootImage;
  readonly store: SqliteStore;
  /** The QEMU driver (replaced by `reattach`). */
  driver: QemuDriver;
  /** A new service over this host's store, driver and data dir: a (re)started daemon. */
  service(o?: ServiceOverrides): SandboxService;
  /** What a kill -9 of the daemon leaves: the driver's handles dropped, a new driver on the same VMs. */
  reattach(): Promise<QemuDriver>;
  /** Kills this host's VMs, closes the store, removes the root (unless `keepRoot`). */
  close(keepRoot?: boolean): Promise<void>;
}

export interface RealHostOpts {
  /** Where: a new /tmp/<prefix>XXXXXX (short: QMP socket paths must fit in 107 bytes) or this dir. */
  prefix?: string;
  dir?: string;
  /** false: a host with no images (an import target). Default: the default image. */
  image?: boolean;
}

/** A host: store, QEMU driver and data dir under one root; nothing shared with other hosts. */
export async function realHost(o: RealHostOpts = {}): Promise<RealHost> {
  const image = o.image === false ? undefined : await defaultBootImage();
  let root: string;
  if (o.dir) {
    root = o.dir;
    await mkdir(root, { recursive: true });
  } else root = await mkdtemp(`/tmp/${o.prefix ?? 'kiln-host-'}`);
  const store = new SqliteStore(`${root}/state.db`);
  const host: RealHost = {
    root,
    get image(): BootImage {
      if (!image) throw new Error(`host ${root} has no images`);
      return image;
    },
    store,
    driver: new QemuDriver({ runDir: `${root}/vms` }),
    service: (s = {}) => wireService({ store, driver: host.driver, dataDir: `${root}/data`, image }, s),
    reattach: async () => {
      await host.driver.close();
      host.driver = new QemuDriver({ runDir: `${root}/vms` });
      return host.driver;
    },
    close: async (keepRoot = false) => {
      await closeDriver(host.driver);
      store.close();
      if (!keepRoot) await rm(root, { recursive: true, force: true });
    },
  };
  return host;
}
