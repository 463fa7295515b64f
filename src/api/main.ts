/**
 * kilnd's process entry: `node src/api/main.ts` (what `kiln daemon` runs). Logs JSON lines to
 * stderr; SIGTERM/SIGINT stop it cleanly (VMs keep running and are re-adopted next time). An
 * uncaught exception or unhandled rejection is logged and kilnd keeps serving (process-guard.ts).
 */
import { isKilnError } from '../core/errors.ts';
import { createLogger } from '../core/log.ts';
import { defaultCacheDir, defaultStateDir } from '../core/paths.ts';
import { startKilnd } from './kilnd.ts';
import { installProcessGuard } from './process-guard.ts';

const log = createLogger({ bindings: { component: 'kilnd' } });
let storm: (() => void) | undefined;
installProcessGuard({ log, onStorm: () => storm?.() });
try {
  const k = await startKilnd({ stateDir: defaultStateDir(), cacheDir: defaultCacheDir(), log });
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
  log.error({ err: e }, isKilnError(e) ? e.message : 'kilnd failed to start');
  process.exitCode = 1;
}
