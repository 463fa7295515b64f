import { chmod, unlink, writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { AccelSetting } from '../core/config.ts';
import { ERROR_CODES, KilnError } from '../core/errors.ts';
import { failpointAt } from '../core/failpoint.ts';
import { writeFileAtomic } from '../core/fs-atomic.ts';
import { UndoStack } from '../core/undo.ts';
import { validateMemoryMiB, validateName, validateVcpus } from '../core/validate.ts';
import { DEFAULT_DISK_RESERVE_MIB, DiskAdmission } from '../daemon/admission.ts';
import { ApiKeyService } from '../daemon/api-keys.ts';
import { createLogger } from '../core/log.ts';
import { HttpGuestClient } from '../daemon/guest-client.ts';
import type { LivenessOpts } from '../daemon/liveness.ts';
import { SandboxConnector } from '../daemon/connect.ts';
import { TemplateEnsurer, type TemplateBuilder } from '../daemon/ensure-template.ts';
import { TemplateBuildService } from '../daemon/templates/build-service.ts';
import { DEFAULT_TEMPLATE_GC_EVERY_S } from '../daemon/templates/gc.ts';
import { SandboxService } from '../daemon/sandbox-service.ts';
import { secureStateDir } from '../daemon/state-dir.ts';
import { buildDefaultImageInChild } from '../images/build-child.ts';
import { imageByKey } from '../images/registry.ts';
import { SqliteStore } from '../store/sqlite-store.ts';
import { acquireStateLock } from '../store/state-lock.ts';
import { hostMemoryMiB } from '../vmm/qemu/host.ts';
import { agentGuardTable, applyAgentGuard, removeAgentGuard } from '../vmm/qemu/agent-guard.ts';
import { QemuDiskLayers } from '../vmm/qemu/disk-layers.ts';
import { enableKsm } from '../vmm/qemu/ksm.ts';
import { QemuDriver } from '../vmm/qemu/qemu-driver.ts';
import { e2bErrorBody, e2bRouterOpts, e2bRoutes } from './e2b.ts';
import { openVolumes } from './volumes.ts';
import { createEnvdProxy } from './envd-proxy.ts';
import { e2bEnvOnce } from './e2b-env.ts';
import { serveDashboard } from './dashboard-serve.ts';
import { createRouter, type Route } from './http.ts';
import { closeServer, listenTcp, socketAnswers } from './net.ts';
import { listenerPlan, type ListenerName, type ListenersPlan } from './limits.ts';
import { createListener, type ListenerLimits } from './listener.ts';
import { nativeRoutes } from './native.ts';
import { ociTemplateMaker } from './oci-templates.ts';
import { openNetworks, type NetworkOpts } from './networks.ts';

export const KILN_VERSION = '0.1.0';

export interface KilndOpts {
  stateDir: string;
  cacheDir: string;
  socketPath?: string;
  log?: Logger;
  /**
   * Guest memory may total host memory x this (default 1.5: restored guests share pages);
   * $KILN_OVERCOMMIT_RATIO through the config (core/config.ts).
   */
  overcommitRatio?: number;
  /** Image builds: the .deb cache and Debian mirror ($KILN_DEB_CACHE_DIR / $KILN_DEBIAN_MIRROR). */
  debCacheDir?: string | undefined;
  debianMirror?: string | undefined;
  /** The accelerator ($KILN_ACCEL through the config): `auto` (default) probes, `kvm`/`tcg` force. */
  accel?: AccelSetting;
  /**
   * TCP ports on 127.0.0.1 of the E2B-compatible API and the envd proxy (0 = any free port).
   * Given: explicit, from $KILN_E2B_API_PORT / $KILN_E2B_SANDBOX_PORT through the config (core/config.ts).
   * Default 7480 / 7481; a default port that
   * is taken falls back to a free one (the ports in use are recorded in `<state>/e2b.json`).
   */
  e2bApiPort?: number;
  e2bSandboxPort?: number;
  /**
   * The web dashboard's TCP port on 127.0.0.1 ($KILN_DASHBOARD_PORT; default 7482, 0 = any; a
   * taken default falls back to a free one) and where its built front end is (default dist/dashboard).
   */
  dashboardPort?: number | undefined;
  webDir?: string | undefined;
  /**
   * The `domain` the E2B API answers ($KILN_SANDBOX_DOMAIN through the config): published ports
   * are `{port}-{sandboxId}.<domain>`. Default `localhost:<envd proxy port>` (curl and browsers
   * resolve `*.localhost` to loopback without any DNS set-up).
   */
  sandboxDomain?: string | undefined;
  /**
   * Free disk space kept whatever sandboxes may write (MiB); $KILN_DISK_RESERVE_MIB through the
   * config, default 256. See daemon/admission.ts.
   */
  diskReserveMiB?: number;
  /**
   * Sandbox disks' worst-case growth is divided by this at admission (1 = each may fill its
   * whole disk); $KILN_DISK_OVERCOMMIT_RATIO through the config, default 1.
   */
  diskOvercommitRatio?: number;
  /**
   * Crash tests: `at` is `<op kind>:<journal step>` (or `qemu:overlay kept`), from
   * $KILN_FAILPOINT; `hit` ends the process there at once (the entry passes a SIGKILL of itself).
   */
  failpoint?: { at: string; hit: () => void };
  /** How long a restored guest may take to answer (default 60 s; $KILN_READY_TIMEOUT_MS). */
  readyTimeoutMs?: number | undefined;
  /** KILN_WARM_POOL: restored VMs kept ready for creates of `base` (unless set per template). */
  warmPool?: number | undefined;
  /** How long a template build's ready command may take (default 120 s; $KILN_TEMPLATE_READY_TIMEOUT_MS). */
  templateReadyTimeoutMs?: number | undefined;
  /**
   * Background loop periods (defaults: reaper and liveness 1 s, chain flattening 30 s;
   * $KILN_REAP_EVERY_MS / $KILN_LIVENESS_EVERY_MS / $KILN_FLATTEN_EVERY_MS).
   */
  loops?: {
    reapEveryMs?: number | undefined;
    livenessEveryMs?: number | undefined;
    flattenEveryMs?: number | undefined;
    /** How long ended sandboxes' records are kept ($KILN_RETENTION_S; default 7 days). */
    retentionMs?: number | undefined;
    /** Template GC: grace and period ($KILN_TEMPLATE_GC_AFTER_S / _EVERY_S; a day / an hour, 0 = on demand). */
    templateGcAfterMs?: number | undefined;
    templateGcEveryMs?: number | undefined;
  };
  /** How the liveness watcher probes guests and retries VMs stopped on a full disk. */
  liveness?: LivenessOpts;
  /**
   * Per-listener limits replacing the planned ones (see limits.ts): connection caps, head and
   * request deadlines, keep-alive. The plan is sized from this process's descriptor limit.
   */
  listeners?: Partial<Record<ListenerName, Partial<ListenerLimits>>>;
  /**
   * Install the nftables rule that keeps every local user but kilnd's off guest agent ports
   * (vmm/qemu/agent-guard.ts) before any VM runs; a failure refuses to start. Default: on;
   * the entry passes $KILN_AGENT_GUARD=off as `false` (only for hosts where every local user is trusted).
   */
  agentGuard?: boolean;
  /** Start the host's kernel same-page merging ($KILN_KSM=on; vmm/qemu/ksm.ts). Default off. */
  ksm?: boolean;
  /** Sandbox networks (KILN_NETWORK, KILN_NET_POOL, KILN_DNS through the config): default isolated. */
  network?: NetworkOpts;
}

export const DEFAULT_E2B_API_PORT = 7480;
export const DEFAULT_E2B_SANDBOX_PORT = 7481;

export interface Kilnd {
  socketPath: string;
  /** `http://127.0.0.1:<port>` of the E2B API (E2B_API_URL) and of the envd proxy (E2B_SANDBOX_URL). */
  e2bApiUrl: string;
  e2bSandboxUrl: string;
  /** The web dashboard (`http://127.0.0.1:<port>/`). */
  dashboardUrl: string;
  keys: ApiKeyService;
  svc: SandboxService;
  server: Server;
  /** The three listeners (`server` is the native one) and the limits each was given. */
  listeners: Record<ListenerName | 'dashboard', Server>;
  limits: ListenersPlan;
  close(): Promise<void>;
}

export const defaultSocketPath = (stateDir: string): string => join(stateDir, 'kilnd.sock');

/** `given` (from the config variable `envName` or a caller), else `dflt`; checked. */
function numberOpt(given: number | undefined, envName: string, dflt: number, min: number): number {
  const v = given ?? dflt;
  if (!Number.isFinite(v) || v < min)
    throw new KilnError('invalid_argument', `${envName}: must be a number >= ${min}, got "${String(v)}"`);
  return v;
}

/** Takes the state dir's lock, makes sure no other daemon serves the socket, writes the pid file. */
async function claimStateDir(o: KilndOpts, socketPath: string, undo: UndoStack): Promise<void> {
  const lock = acquireStateLock(join(o.stateDir, 'kilnd.lock'));
  undo.push('release the state dir lock', () => {
    lock.release();
  });
  // The lock is the guard; a daemon of an older kiln took no lock, but its socket answers.
  if (await socketAnswers(socketPath)) {
    throw new KilnError(
      'conflict',
      `a kiln daemon already serves ${socketPath}; stop it first (kiln daemon stop)`,
    );
  }
  await unlink(socketPath).catch(() => undefined);
  const pidFile = join(o.stateDir, 'kilnd.pid');
  await writeFile(pidFile, `${process.pid}\n`);
  undo.push('remove the pid file', () => unlink(pidFile).catch(() => undefined));
}

/**
 * Opens the store, the driver and the sandbox service on `now` (the clock the connect policy
 * shares), reconciles every VM and starts the background loops.
 */
async function openService(
  o: KilndOpts,
  log: Logger,
  now: () => number,
  undo: UndoStack,
): Promise<{
  store: SqliteStore;
  svc: SandboxService;
}> {
  const disk = new DiskAdmission({
    stateDir: o.stateDir,
    layers: new QemuDiskLayers({ runDir: join(o.stateDir, 'vms') }),
    reserveMiB: numberOpt(o.diskReserveMiB, 'KILN_DISK_RESERVE_MIB', DEFAULT_DISK_RESERVE_MIB, 0),
    overcommitRatio: numberOpt(o.diskOvercommitRatio, 'KILN_DISK_OVERCOMMIT_RATIO', 1, 1),
  });
  const guard = o.agentGuard ?? true;
  // This kilnd's own table (named by its state dir): another kilnd's start or stop never touches it.
  const guardTable = agentGuardTable(o.stateDir);
  if (guard) await applyAgentGuard({ table: guardTable, uid: process.getuid?.() ?? 0 });
  else log.warn('KILN_AGENT_GUARD=off: any local user can connect to guest agent ports');
  const store = new SqliteStore(join(o.stateDir, 'kiln.db'));
  undo.push('close the store', () => {
    store.close();
  });
  const failpoint = failpointAt(o.failpoint?.at, (where) => {
    log.error({ failpoint: where }, `failpoint ${where} hit: kilnd dies here`);
    o.failpoint?.hit();
  });
  if (failpoint) log.warn({ failpoint: o.failpoint?.at }, 'failpoint armed (crash test)');
  const driver = new QemuDriver({
    runDir: join(o.stateDir, 'vms'),
    log,
    failpoint,
    ...(o.accel ? { accel: o.accel } : {}),
  });
  undo.push('close the driver', () => driver.close());
  if (o.ksm && (await enableKsm()).wasOff)
    log.info('KILN_KSM=on: started the kernel same-page merging (host-wide)');
  const { networks, isolated } = await openNetworks(o.stateDir, o.network ?? { mode: 'isolated' }, log, undo);
  const volumes = await openVolumes(store, join(o.stateDir, 'data'), isolated, log, undo);
  if (guard)
    undo.push('remove the agent guard if no VM is left', async () => {
      // VMs outlive kilnd: while any runs, its agent stays guarded until the next start.
      if ((await driver.list()).length === 0) await removeAgentGuard({ table: guardTable });
    });
  const svc = new SandboxService({
    store,
    driver,
    guest: (g) => new HttpGuestClient(g),
    image: async (key) => imageByKey(o.cacheDir, key),
    dataDir: join(o.stateDir, 'data'),
    log,
    now,
    capacity: { hostMemoryMiB: hostMemoryMiB(), overcommitRatio: o.overcommitRatio ?? 1.5 },
    readyTimeoutMs: o.readyTimeoutMs,
    disk,
    failpoint,
    networks,
    volumes,
    unisolated: o.network?.mode === 'unisolated',
    warmPool: { defaultSize: o.warmPool ?? 0 },
    ...(o.liveness ? { liveness: o.liveness } : {}),
  });
  const rec = await svc.reconcile();
  log.info(rec, 'reconciled');
  svc.startBackground(o.loops);
  undo.push('stop the background loops', async () => {
    svc.stopBackground();
    // A warm pool fill in progress ends before the store closes (its VM stays, re-adopted next start).
    await svc.backgroundSettled();
  });
  return { store, svc };
}

/** Builds a template from the default image (built first if the cache has none). */
function templateBuilder(o: KilndOpts, svc: SandboxService, log: Logger): TemplateBuilder {
  return async (name, res, opId) => {
    // Refuse bad input before the image cache check, which takes seconds.
    validateName('template', name);
    validateMemoryMiB(res.memoryMiB);
    validateVcpus(res.vcpus);
    log.info({ opId }, 'building or finding the default image');
    const key = await buildDefaultImageInChild(o.cacheDir, {
      debCacheDir: o.debCacheDir,
      mirror: o.debianMirror,
    });
    // By key: another kiln sharing the cache may point the name `default` elsewhere meanwhile.
    const img = await imageByKey(o.cacheDir, key);
    return svc.buildTemplate(
      name,
      { key: img.key, kernel: img.kernel, initrd: img.initrd, rootfs: img.rootfs },
      res,
      { opId },
    );
  };
}

type E2bServeDeps = {
  svc: SandboxService;
  keys: ApiKeyService;
  templates: TemplateEnsurer;
  connector: SandboxConnector;
  builds: TemplateBuildService;
};

/** The E2B API and the envd proxy on their TCP ports; their URLs are recorded in `<state>/e2b.json`. */
async function serveE2b(
  o: KilndOpts,
  log: Logger,
  api: E2bServeDeps,
  limits: ListenersPlan,
  undo: UndoStack,
): Promise<{
  e2bApi: Server;
  envdProxy: Server;
  e2bApiUrl: string;
  e2bSandboxUrl: string;
  sandboxDomain: string;
}> {
  const { svc, keys, templates, connector, builds } = api;
  // Known once the envd proxy listens; no request is served before.
  let sandboxDomain = o.sandboxDomain ?? 'localhost';
  const e2bApi = createListener(
    createRouter(
      e2bRoutes({
        svc,
        keys,
        buildTemplate: () => Promise.reject(new Error('unused')),
        templates,
        connector,
        builds,
        sandboxDomain: () => sandboxDomain,
      }),
      log.child({ api: 'e2b' }),
      e2bRouterOpts(keys),
    ),
    { name: 'e2b-api', limits: limits.e2bApi, log, errorBody: e2bErrorBody },
  );
  const proxy = createEnvdProxy({
    svc,
    log: log.child({ api: 'envd-proxy' }),
    connector,
    // E2B's allowPublicTraffic / maskRequestHost, as the sandbox was created (or updated).
    traffic: (id) => {
      const s = svc.get(id);
      return {
        allowPublicTraffic: s.network.allowPublicTraffic,
        token: s.trafficToken,
        ...(s.network.maskRequestHost === undefined ? {} : { maskRequestHost: s.network.maskRequestHost }),
      };
    },
  });
  undo.push('close the envd proxy', () => {
    proxy.close();
  });
  // Connect streams (commands, watches) live as long as the guest keeps them: no request deadline.
  const envdProxy = createListener(proxy.handle, {
    name: 'envd-proxy',
    limits: limits.envdProxy,
    log,
    errorBody: (k) => ({ code: ERROR_CODES[k.code].status, message: k.message }),
    upgrade: proxy.upgrade,
  });
  undo.push('close the E2B API', () => closeServer(e2bApi));
  const apiPort = await listenTcp(e2bApi, o.e2bApiPort, 'KILN_E2B_API_PORT', DEFAULT_E2B_API_PORT, log);
  undo.push('close the envd proxy port', () => closeServer(envdProxy));
  const sandboxPort = await listenTcp(
    envdProxy,
    o.e2bSandboxPort,
    'KILN_E2B_SANDBOX_PORT',
    DEFAULT_E2B_SANDBOX_PORT,
    log,
  );
  // Before the port closes (undo runs in reverse): upgraded connections would hold its close.
  undo.push('end the envd proxy connections', () => {
    proxy.close();
  });
  const e2bApiUrl = `http://127.0.0.1:${apiPort}`;
  const e2bSandboxUrl = `http://127.0.0.1:${sandboxPort}`;
  sandboxDomain = o.sandboxDomain ?? `localhost:${sandboxPort}`;
  const e2bFile = join(o.stateDir, 'e2b.json');
  undo.push('remove e2b.json', () => unlink(e2bFile).catch(() => undefined));
  await writeFileAtomic(e2bFile, JSON.stringify({ apiUrl: e2bApiUrl, sandboxUrl: e2bSandboxUrl }) + '\n');
  return { e2bApi, envdProxy, e2bApiUrl, e2bSandboxUrl, sandboxDomain };
}

/** The native API on the unix socket (mode 0600). */
async function serveNative(
  socketPath: string,
  log: Logger,
  routes: Route[],
  limits: ListenersPlan,
  undo: UndoStack,
): Promise<Server> {
  const server = createListener(createRouter(routes, log), {
    name: 'native',
    limits: limits.native,
    log,
    errorBody: (k, opId) => ({ ...k.toJSON(), opId }),
  });
  undo.push('close the unix socket', async () => {
    await closeServer(server);
    await unlink(socketPath).catch(() => undefined);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await chmod(socketPath, 0o600);
  return server;
}

/**
 * Starts kilnd. First of all it takes the state dir's lock (`<state>/kilnd.lock`, see
 * store/state-lock.ts): a second daemon on the same state dir is refused with `conflict` naming
 * the pid that holds it. Then it opens the state, re-adopts or cleans up every VM
 * (reconciliation), starts the reaper and liveness watcher, and serves the E2B API, the envd
 * proxy and the native API on a unix socket (mode 0600).
 *
 * Start-up is one unwindable sequence: every step that opened something registers how to close
 * it, and a step that fails unwinds them all (ports, socket, loops, store, lock, files), so a
 * failed start leaves nothing behind. `close()` runs the same undo steps.
 */
export async function startKilnd(o: KilndOpts): Promise<Kilnd> {
  const log = o.log ?? createLogger({ bindings: { component: 'kilnd' } });
  const socketPath = o.socketPath ?? defaultSocketPath(o.stateDir);
  // Before anything opens a file in it: the state dir and what it holds are private.
  await secureStateDir(o.stateDir, log);
  const undo = new UndoStack();
  try {
    await claimStateDir(o, socketPath, undo);
    // One clock for the service and the connect policy (timeouts are compared against it).
    const now = Date.now;
    const { store, svc } = await openService(o, log, now, undo);
    const buildTemplate = templateBuilder(o, svc, log);
    // One of each for both APIs: a first create on either builds `base` once.
    const templates = new TemplateEnsurer(svc, buildTemplate);
    const builds = new TemplateBuildService({
      svc,
      store,
      dataDir: join(o.stateDir, 'data'),
      log,
      now,
      ensureTemplate: (name, opId) => templates.ensure(name, opId),
      imageTemplate: ociTemplateMaker(o, svc, log),
      image: async (key) => imageByKey(o.cacheDir, key),
      ...(o.templateReadyTimeoutMs ? { readyTimeoutMs: o.templateReadyTimeoutMs } : {}),
      gcAfterMs: o.loops?.templateGcAfterMs,
    });
    await builds.recover();
    builds.gc.start(o.loops?.templateGcEveryMs ?? DEFAULT_TEMPLATE_GC_EVERY_S * 1000);
    undo.push('stop template garbage collection, wait for builds', () => builds.close());
    const connector = new SandboxConnector(svc, now);
    const keys = new ApiKeyService({ store });
    const limits = listenerPlan(log, o.listeners);
    const e2b = await serveE2b(o, log, { svc, keys, templates, connector, builds }, limits, undo);
    const e2bEnv = e2bEnvOnce(o.stateDir, keys, e2b.e2bApiUrl, e2b.e2bSandboxUrl);
    const dash = await serveDashboard(
      { port: o.dashboardPort, webDir: o.webDir },
      log,
      {
        svc,
        keys,
        builds,
        version: KILN_VERSION,
        stateDir: o.stateDir,
        cacheDir: o.cacheDir,
        sandboxDomain: () => e2b.sandboxDomain,
      },
      undo,
    );
    const routes = nativeRoutes({
      svc,
      buildTemplate,
      templates,
      builds,
      version: KILN_VERSION,
      keys,
      e2bEnv,
      sandboxDomain: e2b.sandboxDomain,
      dashboard: dash,
    });
    const server = await serveNative(socketPath, log, routes, limits, undo);
    log.info({ socketPath, version: KILN_VERSION }, 'kilnd listening');
    let closing: Promise<void> | undefined;
    return {
      socketPath,
      e2bApiUrl: e2b.e2bApiUrl,
      e2bSandboxUrl: e2b.e2bSandboxUrl,
      dashboardUrl: dash.url,
      keys,
      svc,
      server,
      listeners: { native: server, e2bApi: e2b.e2bApi, envdProxy: e2b.envdProxy, dashboard: dash.server },
      limits,
      close: () =>
        (closing ??= (async () => {
          await undo.unwind(log);
          log.info('kilnd stopped (VMs keep running and are re-adopted at the next start)');
        })()),
    };
  } catch (e) {
    // Leave nothing open or half-written: the daemon did not start.
    await undo.unwind(log);
    throw e;
  }
}
