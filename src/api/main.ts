/**
 * kilnd's process entry: `node src/api/main.ts` (what `kiln daemon` runs). Logs JSON lines to
 * stderr; SIGTERM/SIGINT stop it cleanly (VMs keep running and are re-adopted next time).
 */
import { isKilnError } from '../core/errors.ts';
import { createLogger } from '../core/log.ts';
import { defaultCacheDir, defaultStateDir } from '../core/paths.ts';
import { startKilnd } from './kilnd.ts';

const log = createLogger({ bindings: { component: 'kilnd' } });
try {
  const k = await startKilnd({ stateDir: defaultStateDir(), cacheDir: defaultCacheDir(), log });
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
