import { chmod, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { KilnError, isKilnError } from '../core/errors.ts';
import { writeFileAtomic } from '../core/fs-atomic.ts';
import { ApiKeyService } from '../daemon/api-keys.ts';
import { createLogger } from '../core/log.ts';
import { HttpGuestClient } from '../daemon/guest-client.ts';
import { SandboxService } from '../daemon/sandbox-service.ts';
import { buildImage } from '../images/build.ts';
import { imageByKey, resolveImage } from '../images/registry.ts';
import { defaultImageSpec } from '../images/spec.ts';
import { SqliteStore } from '../store/sqlite-store.ts';
import { hostMemoryMiB } from '../vmm/qemu/host.ts';
import { applyAgentGuard } from '../vmm/qemu/agent-guard.ts';
import { QemuDriver } from '../vmm/qemu/qemu-driver.ts';
import { e2bRouterOpts, e2bRoutes } from './e2b.ts';
import { createEnvdProxy } from './envd-proxy.ts';
import { createRouter } from './http.ts';
import { nativeRoutes, type E2bEnv } from './native.ts';

export const KILN_VERSION = '0.1.0';

export interface KilndOpts {
  stateDir: string;
  cacheDir: string;
  socketPath?: string;
  log?: Logger;
  /** Guest memory may total host memory x this (default 1.5: restored guests share pages). */
  overcommitRatio?: number;
  /**
   * TCP ports on 127.0.0.1 of the E2B-compatible API and the envd proxy (0 = any free port).
   * Defaults: $KILN_E2B_API_PORT / $KILN_E2B_SANDBOX_PORT, else 7480 / 7481; a default port that
   * is taken falls back to a free one (the ports in use are recorded in `<state>/e2b.json`).
   */
  e2bApiPort?: number;
  e2bSandboxPort?: number;
  /**
   * Install the nftables rule that keeps every local user but kilnd's off guest agent ports
   * (vmm/qemu/agent-guard.ts) before any VM runs; a failure refuses to start. Default: on,
   * unless $KILN_AGENT_GUARD is `off` (only for hosts where every local user is trusted).
   */
  agentGuard?: boolean;
}

export const DEFAULT_E2B_API_PORT = 7480;
export const DEFAULT_E2B_SANDBOX_PORT = 7481;

export interface Kilnd {
  socketPath: string;
  /** `http://127.0.0.1:<port>` of the E2B API (E2B_API_URL) and of the envd proxy (E2B_SANDBOX_URL). */
  e2bApiUrl: string;
  e2bSandboxUrl: string;
  keys: ApiKeyService;
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

/** Listens on 127.0.0.1; a default port that is taken falls back to a free one. */
async function listenTcp(
  server: Server,
  given: number | undefined,
  envName: string,
  dflt: number,
  log: Logger,
): Promise<number> {
  const env = process.env[envName];
  const explicit = given ?? (env === undefined || env === '' ? undefined : Number(env));
  if (explicit !== undefined && (!Number.isInteger(explicit) || explicit < 0 || explicit > 65535))
    throw new KilnError('invalid_argument', `${envName}: must be a TCP port (0-65535), got "${String(env)}"`);
  const listen = (port: number): Promise<number> =>
    new Promise((resolve, reject) => {
      const onError = (e: Error): void => {
        reject(e);
      };
      server.once('error', onError);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', onError);
        resolve((server.address() as AddressInfo).port);
      });
    });
  try {
    return await listen(explicit ?? dflt);
  } catch (e) {
    const inUse = (e as NodeJS.ErrnoException).code === 'EADDRINUSE';
    if (explicit === undefined && inUse) {
      log.warn({ port: dflt }, `${envName}: port ${dflt} is taken; using a free port (see kiln e2b env)`);
      return listen(0);
    }
    throw new KilnError(
      inUse ? 'conflict' : 'internal',
      `cannot listen on 127.0.0.1:${explicit ?? dflt} (${envName}): ${(e as Error).message}`,
      { cause: e },
    );
  }
}

/**
 * What `kiln e2b env` prints: the two URLs and an API key. The key is created on first use and
 * kept (mode 0600) in `<state>/e2b-env.key`, so every call prints the same one until it is revoked.
 */
async function envForCli(
  stateDir: string,
  keys: ApiKeyService,
  apiUrl: string,
  sandboxUrl: string,
): Promise<E2bEnv> {
  const file = join(stateDir, 'e2b-env.key');
  const kept = (await readFile(file, 'utf8').catch(() => '')).trim();
  if (kept) {
    try {
      keys.verify(kept);
      return { apiUrl, sandboxUrl, apiKey: kept };
    } catch (e) {
      if (!isKilnError(e) || e.code !== 'unauthenticated') throw e;
    }
  }
  const { key } = keys.create('e2b-env');
  await writeFileAtomic(file, key + '\n', 0o600);
  return { apiUrl, sandboxUrl, apiKey: key };
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
  const guard = o.agentGuard ?? process.env['KILN_AGENT_GUARD'] !== 'off';
  if (guard) await applyAgentGuard({ uid: process.getuid?.() ?? 0 });
  else log.warn('KILN_AGENT_GUARD=off: any local user can connect to guest agent ports');
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
  const keys = new ApiKeyService({ store });
  const e2bApi = createServer(
    createRouter(e2bRoutes({ svc, keys, buildTemplate }), log.child({ api: 'e2b' }), e2bRouterOpts(keys)),
  );
  e2bApi.requestTimeout = 0; // a first create builds the base template
  const proxy = createEnvdProxy({ svc, log: log.child({ api: 'envd-proxy' }) });
  const envdProxy = createServer(proxy.handle);
  // Connect streams (commands, watches) live as long as the guest keeps them.
  envdProxy.requestTimeout = 0;
  envdProxy.keepAliveTimeout = 650_000;
  let apiPort: number;
  let sandboxPort: number;
  try {
    apiPort = await listenTcp(e2bApi, o.e2bApiPort, 'KILN_E2B_API_PORT', DEFAULT_E2B_API_PORT, log);
    sandboxPort = await listenTcp(
      envdProxy,
      o.e2bSandboxPort,
      'KILN_E2B_SANDBOX_PORT',
      DEFAULT_E2B_SANDBOX_PORT,
      log,
    );
  } catch (e) {
    // Leave nothing open: the daemon did not start.
    svc.stopBackground();
    e2bApi.close();
    envdProxy.close();
    proxy.close();
    await driver.close();
    store.close();
    throw e;
  }
  const e2bApiUrl = `http://127.0.0.1:${apiPort}`;
  const e2bSandboxUrl = `http://127.0.0.1:${sandboxPort}`;
  const e2bFile = join(o.stateDir, 'e2b.json');
  await writeFileAtomic(e2bFile, JSON.stringify({ apiUrl: e2bApiUrl, sandboxUrl: e2bSandboxUrl }) + '\n');
  const e2bEnv = (): Promise<E2bEnv> => envForCli(o.stateDir, keys, e2bApiUrl, e2bSandboxUrl);
  const server = createServer(
    createRouter(nativeRoutes({ svc, buildTemplate, version: KILN_VERSION, keys, e2bEnv }), log),
  );
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
    e2bApiUrl,
    e2bSandboxUrl,
    keys,
    svc,
    server,
    close: async () => {
      svc.stopBackground();
      for (const s of [server, e2bApi, envdProxy]) {
        s.closeAllConnections();
        await new Promise<void>((r) => {
          s.close(() => {
            r();
          });
        });
      }
      proxy.close();
      await unlink(e2bFile).catch(() => undefined);
      await driver.close();
      store.close();
      await unlink(socketPath).catch(() => undefined);
      await unlink(pidFile).catch(() => undefined);
      log.info('kilnd stopped (VMs keep running and are re-adopted at the next start)');
    },
  };
}
