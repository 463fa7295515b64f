/** The sandbox service over the fake driver, and the native API around it, for unit tests. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRouter, type Route } from '../../src/api/http.ts';
import { nativeRoutes } from '../../src/api/native.ts';
import { nullLogger } from '../../src/core/log.ts';
import { ApiKeyService } from '../../src/daemon/api-keys.ts';
import type { GuestClient } from '../../src/daemon/guest-client.ts';
import { SandboxService, type SandboxServiceDeps } from '../../src/daemon/sandbox-service.ts';
import type { SqliteStore } from '../../src/store/sqlite-store.ts';
import type { FakeDriver } from '../../src/vmm/fake-driver.ts';

export const FAKE_IMAGE = {
  key: 'img-1',
  kernel: '/img/vmlinuz',
  initrd: '/img/initrd.img',
  rootfs: '/img/rootfs.ext4',
};

/** A guest agent that is always healthy and runs every command with exit code 0. */
export const okGuest: GuestClient = {
  health: () => Promise.resolve(),
  init: () => Promise.resolve({ entropy: 'reseeded' }),
  exec: (cmd) =>
    Promise.resolve({ exitCode: 0, stdout: `ran ${cmd}\n`, stderr: '', status: 'exit status 0' }),
  metrics: () => Promise.reject(new Error('no metrics in this test')),
  upload: () => Promise.reject(new Error('no uploads in this test')),
  writeStdin: () => Promise.reject(new Error('no stdin in this test')),
};

/** The service's dependencies over `store`, `driver` and `dataDir`, with the always-ok guest. */
export function fakeDeps(o: { store: SqliteStore; driver: FakeDriver; dataDir: string }): SandboxServiceDeps {
  return { ...o, guest: () => okGuest, image: () => Promise.resolve(FAKE_IMAGE), log: nullLogger };
}

/** A service with template `base` built. */
export async function fakeService(deps: SandboxServiceDeps): Promise<SandboxService> {
  const svc = new SandboxService(deps);
  await svc.buildTemplate('base', FAKE_IMAGE, { memoryMiB: 512, vcpus: 1 });
  return svc;
}

/** The native API's routes around `svc` (no template builds, no e2b env). */
export function nativeTestRoutes(svc: SandboxService, store: SqliteStore): Route[] {
  return nativeRoutes({
    svc,
    version: 'test',
    buildTemplate: () => Promise.reject(new Error('unused')),
    keys: new ApiKeyService({ store }),
    e2bEnv: () => Promise.reject(new Error('unused')),
  });
}

/** The native API's request handler around `svc`. */
export function nativeHandler(
  svc: SandboxService,
  store: SqliteStore,
): (req: IncomingMessage, res: ServerResponse) => void {
  return createRouter(nativeTestRoutes(svc, store), nullLogger);
}
