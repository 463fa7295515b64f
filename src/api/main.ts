/**
 * kilnd's process entry: `node src/api/main.ts` (what `kiln daemon` runs). Logs JSON lines to
 * stderr; SIGTERM/SIGINT stop it cleanly (VMs keep running and are re-adopted next time). A
 * start that fails has already closed everything it opened; the process exits with status 1. An
 * uncaught exception or unhandled rejection is logged and kilnd keeps serving (process-guard.ts).
 */
import { isKilnError } from '../core/errors.ts';
import { createLogger } from '../core/log.ts';
import { loadConfig } from '../core/config.ts';
import { startKilnd } from './kilnd.ts';
import { installProcessGuard } from './process-guard.ts';

// The detached daemon's stdout/stderr is <state>/kilnd.log: a full disk (ENOSPC) or a reader
// that went away (EPIPE) must not end kilnd through an unhandled 'error' (the logger itself
// drops lines it cannot write: core/log.ts fdDestination).
for (const s of [process.stdout, process.stderr]) s.on('error', () => undefined);

// kilnd's state holds secrets (tokens, env vars, guest memory): every file it, QEMU or qemu-img
// creates is private to kilnd's user. Image builds run in a child with the usual 022.
process.umask(0o077);
const log = createLogger({ bindings: { component: 'kilnd' } });
let storm: (() => void) | undefined;
installProcessGuard({ log, onStorm: () => storm?.() });
try {
  // Every KILN_* variable, read and checked once; a bad one refuses the start, naming it.
  const config = loadConfig();
  const failpoint = config.failpoint;
  const k = await startKilnd({
    stateDir: config.stateDir,
    cacheDir: config.cacheDir,
    debCacheDir: config.debCacheDir,
    debianMirror: config.debianMirror,
    accel: config.accel,
    e2bApiPort: config.e2bApiPort,
    e2bSandboxPort: config.e2bSandboxPort,
    dashboardPort: config.dashboardPort,
    sandboxDomain: config.sandboxDomain,
    overcommitRatio: config.overcommitRatio,
    diskReserveMiB: config.diskReserveMiB,
    diskOvercommitRatio: config.diskOvercommitRatio,
    agentGuard: config.agentGuard,
    ksm: config.ksm,
    network: { mode: config.network, pool: config.netPool, dns: config.dns },
    readyTimeoutMs: config.readyTimeoutMs,
    warmPool: config.warmPool,
    templateReadyTimeoutMs: config.templateReadyTimeoutMs,
    loops: {
      reapEveryMs: config.reapEveryMs,
      livenessEveryMs: config.livenessEveryMs,
      flattenEveryMs: config.flattenEveryMs,
      retentionMs: config.retentionS === undefined ? undefined : config.retentionS * 1000,
      templateGcAfterMs: config.templateGcAfterS === undefined ? undefined : config.templateGcAfterS * 1000,
      templateGcEveryMs: config.templateGcEveryS === undefined ? undefined : config.templateGcEveryS * 1000,
    },
    log,
    // A crash test's failpoint ends kilnd as kill -9 would: no clean-up, no exit handlers.
    ...(failpoint ? { failpoint: { at: failpoint, hit: () => process.kill(process.pid, 'SIGKILL') } } : {}),
  });
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    void k.close().finally(() => {
      process.exitCode ??= 0;
    });
  };
  storm = () => {
    process.exitCode = 1;
    stop();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} catch (e) {
  log.error({ err: e }, isKilnError(e) ? `kilnd did not start: ${e.message}` : 'kilnd failed to start');
  process.exitCode = 1;
  // startKilnd closed everything it opened, so the process ends now by itself. Should a handle
  // still hold it (a bug), end it anyway: a daemon that did not start must not linger.
  setTimeout(() => {
    // eslint-disable-next-line no-restricted-properties -- the process entry of a failed start
    process.exit(1);
  }, 2000).unref();
}
