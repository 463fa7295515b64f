import { chmod, mkdir, unlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { KilnError } from '../core/errors.ts';
import { createLogger } from '../core/log.ts';
import { HttpGuestClient } from '../daemon/guest-client.ts';
import { SandboxService } from '../daemon/sandbox-service.ts';
import { buildImage } from '../images/build.ts';
import { imageByKey, resolveImage } from '../images/registry.ts';
import { defaultImageSpec } from '../images/spec.ts';
import { SqliteStore } from '../store/sqlite-store.ts';
import { hostMemoryMiB } from '../vmm/qemu/host.ts';
import { QemuDriver } from '../vmm/qemu/qemu-driver.ts';
import { createRouter } from './http.ts';
import { nativeRoutes } from './native.ts';

export const KILN_VERSION = '0.1.0';

export interface KilndOpts {
  stateDir: string;
  cacheDir: string;
  socketPath?: string;
  log?: Logger;
  /** Guest memory may total host memory x this (default 1.5: restored guests share pages). */
  overcommitRatio?: number;
}

export interface Kilnd {
  socketPath: string;
  svc: SandboxService;
  server: Server;
  close(): Promise<void>;
}

export const defaultSocketPath = (stateDir: string): string => join(stateDir, 'kilnd.sock');

/** True when something answers on the unix socket. */
function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => {
      resolve(false);
    });
  });
}

/**
 * Starts kilnd: opens the state, re-adopts or cleans up every VM (reconciliation), starts the
 * reaper and liveness watcher, and serves the native API on a unix socket (mode 0600). The
 * socket is also the lock: a second daemon on the same state dir is refused.
 */
export async function startKilnd(o: KilndOpts): Promise<Kilnd> {
  const log = o.log ?? createLogger({ bindings: { component: 'kilnd' } });
  const socketPath = o.socketPath ?? defaultSocketPath(o.stateDir);
  await mkdir(o.stateDir, { recursive: true, mode: 0o700 });
  if (await socketAnswers(socketPath)) {
    throw new KilnError(
      'conflict',
      `a kiln daemon already serves ${socketPath}; stop it first (kiln daemon stop)`,
    );
  }
  await unlink(socketPath).catch(() => undefined);
  const store = new SqliteStore(join(o.stateDir, 'kiln.db'));
  const driver = new QemuDriver({ runDir: join(o.stateDir, 'vms'), log });
  const svc = new SandboxService({
    store,
    driver,
    guest: (g) => new HttpGuestClient(g),
    image: async (key) => imageByKey(o.cacheDir, key),
    dataDir: join(o.stateDir, 'data'),
    log,
    capacity: { hostMemoryMiB: hostMemoryMiB(), overcommitRatio: o.overcommitRatio ?? 1.5 },
  });
  const rec = await svc.reconcile();
  log.info(rec, 'reconciled');
  svc.startBackground();
  const buildTemplate = async (name: string, res: { memoryMiB: number; vcpus: number }, opId: string) => {
    await buildImage({ spec: defaultImageSpec(), cacheDir: o.cacheDir, log: log.child({ opId }) });
    const img = await resolveImage(o.cacheDir, 'default');
    return svc.buildTemplate(
      name,
      { key: img.key, kernel: img.kernel, initrd: img.initrd, rootfs: img.rootfs },
      res,
      { opId },
    );
  };
  const server = createServer(createRouter(nativeRoutes({ svc, buildTemplate, version: KILN_VERSION }), log));
  server.requestTimeout = 0; // template builds and long execs
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      resolve();
    });
  });
  await chmod(socketPath, 0o600);
  const pidFile = join(o.stateDir, 'kilnd.pid');
  await writeFile(pidFile, `${process.pid}\n`);
  log.info({ socketPath, version: KILN_VERSION }, 'kilnd listening');
  return {
    socketPath,
    svc,
    server,
    close: async () => {
      svc.stopBackground();
      server.closeAllConnections();
      await new Promise<void>((r) => {
        server.close(() => {
          r();
        });
      });
      await driver.close();
      store.close();
      await unlink(socketPath).catch(() => undefined);
      await unlink(pidFile).catch(() => undefined);
      log.info('kilnd stopped (VMs keep running and are re-adopted at the next start)');
    },
  };
}
