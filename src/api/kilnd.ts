import { chmod, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { ERROR_CODES, KilnError, isKilnError } from '../core/errors.ts';
import { writeFileAtomic } from '../core/fs-atomic.ts';
import { validateMemoryMiB, validateName, validateVcpus } from '../core/validate.ts';
import { ApiKeyService } from '../daemon/api-keys.ts';
import { createLogger } from '../core/log.ts';
import { HttpGuestClient } from '../daemon/guest-client.ts';
import { SandboxService } from '../daemon/sandbox-service.ts';
import { buildImage } from '../images/build.ts';
import { imageByKey, resolveImage } from '../images/registry.ts';
import { defaultImageSpec } from '../images/spec.ts';
import { SqliteStore } from '../store/sqlite-store.ts';
import { hostMemoryMiB } from '../vmm/qemu/host.ts';
import { QemuDriver } from '../vmm/qemu/qemu-driver.ts';
import { e2bErrorBody, e2bRouterOpts, e2bRoutes } from './e2b.ts';
import { createEnvdProxy } from './envd-proxy.ts';
import { createRouter } from './http.ts';
import {
  FALLBACK_NOFILE,
  planListeners,
  readNofile,
  type ListenerName,
  type ListenersPlan,
} from './limits.ts';
import { createListener, type ListenerLimits } from './listener.ts';
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
   * Per-listener limits replacing the planned ones (see limits.ts): connection caps, head and
   * request deadlines, keep-alive. The plan is sized from this process's descriptor limit.
   */
  listeners?: Partial<Record<ListenerName, Partial<ListenerLimits>>>;
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
  /** The three listeners (`server` is the native one) and the limits each was given. */
  listeners: Record<ListenerName, Server>;
  limits: ListenersPlan;
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
 * The listeners' limits, sized from the descriptors this process has (Node raises its soft limit
 * to the hard one at start-up; a soft limit still below it is worth a warning).
 */
function listenerPlan(log: Logger, overrides: KilndOpts['listeners']): ListenersPlan {
  const nofile = readNofile();
  if (nofile && nofile.soft < nofile.hard)
    log.warn(nofile, 'the open-files soft limit is below the hard limit; kilnd serves fewer connections');
  const plan = planListeners(nofile?.soft ?? FALLBACK_NOFILE, overrides);
  log.info(
    {
      nofile: plan.nofile,
      reserve: plan.reserve,
      maxConnections: {
        native: plan.native.maxConnections,
        e2bApi: plan.e2bApi.maxConnections,
        envdProxy: plan.envdProxy.maxConnections,
      },
    },
    'listener limits',
  );
  return plan;
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
    // Refuse bad input before the image cache check, which takes seconds.
    validateName('template', name);
    validateMemoryMiB(res.memoryMiB);
    validateVcpus(res.vcpus);
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
  const limits = listenerPlan(log, o.listeners);
  const e2bApi = createListener(
    createRouter(e2bRoutes({ svc, keys, buildTemplate }), log.child({ api: 'e2b' }), e2bRouterOpts(keys)),
    { name: 'e2b-api', limits: limits.e2bApi, log, errorBody: e2bErrorBody },
  );
  const proxy = createEnvdProxy({ svc, log: log.child({ api: 'envd-proxy' }) });
  // Connect streams (commands, watches) live as long as the guest keeps them: no request deadline.
  const envdProxy = createListener(proxy.handle, {
    name: 'envd-proxy',
    limits: limits.envdProxy,
    log,
    errorBody: (k) => ({ code: ERROR_CODES[k.code].status, message: k.message }),
  });
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
  // One at a time: concurrent first calls would each create a key and race to keep theirs.
  let envInFlight: Promise<E2bEnv> | undefined;
  const e2bEnv = (): Promise<E2bEnv> =>
    (envInFlight ??= envForCli(o.stateDir, keys, e2bApiUrl, e2bSandboxUrl).finally(() => {
      envInFlight = undefined;
    }));
  const server = createListener(
    createRouter(nativeRoutes({ svc, buildTemplate, version: KILN_VERSION, keys, e2bEnv }), log),
    { name: 'native', limits: limits.native, log, errorBody: (k, opId) => ({ ...k.toJSON(), opId }) },
  );
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
    listeners: { native: server, e2bApi, envdProxy },
    limits,
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
