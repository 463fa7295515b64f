/**
 * kilnd's process entry: `node src/api/main.ts` (what `kiln daemon` runs). Logs JSON lines to
 * stderr; SIGTERM/SIGINT stop it cleanly (VMs keep running and are re-adopted next time).
 */
import { isKilnError } from '../core/errors.ts';
import { createLogger } from '../core/log.ts';
import { defaultCacheDir, defaultStateDir } from '../core/paths.ts';
import { startKilnd } from './kilnd.ts';

// kilnd's state holds secrets (tokens, env vars, guest memory): every file it, QEMU or qemu-img
// creates is private to kilnd's user. Image builds run in a child with the usual 022.
process.umask(0o077);
const log = createLogger({ bindings: { component: 'kilnd' } });
try {
  const failpoint = process.env['KILN_FAILPOINT'];
  const k = await startKilnd({
    stateDir: defaultStateDir(),
    cacheDir: defaultCacheDir(),
    log,
    // A crash test's failpoint ends kilnd as kill -9 would: no clean-up, no exit handlers.
    ...(failpoint ? { failpoint: { at: failpoint, hit: () => process.kill(process.pid, 'SIGKILL') } } : {}),
  });
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    void k.close().finally(() => {
      process.exitCode = 0;
    });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} catch (e) {
  log.error({ err: e }, isKilnError(e) ? e.message : 'kilnd failed to start');
  process.exitCode = 1;
}
