import type { SandboxRecord } from '../../core/domain.ts';
import { KilnError } from '../../core/errors.ts';
import { validateInt } from '../../core/validate.ts';
import type { ServiceContext } from '../sandbox/context.ts';
import { getSandbox } from '../sandbox/queries.ts';
import { MAX_TIMEOUT_S } from '../sandbox/types.ts';

/** Sets the sandbox to end `timeoutS` seconds from now (E2B's setTimeout). */
export function setEndTime(sc: ServiceContext, id: string, timeoutS: number): SandboxRecord {
  validateInt('timeout', timeoutS, 1, MAX_TIMEOUT_S);
  const s = getSandbox(sc, id);
  if (s.state === 'dead') throw new KilnError('invalid_state', `sandbox ${id} is dead`);
  return sc.store.updateSandbox(id, { endAt: new Date(sc.now() + timeoutS * 1000).toISOString() });
}

/**
 * Ends every running sandbox whose end time has passed: pauses it when it asked for that
 * (autoPause), kills it otherwise, through the facade's operations (which take the locks).
 * Paused sandboxes stay until resumed or killed (as in E2B). Resolves with the ids ended.
 */
export async function reapExpired(
  sc: ServiceContext,
  end: {
    /** `memory`: the sandbox's autoPauseMemory (false: a filesystem-only pause). */
    pause: (id: string, memory: boolean) => Promise<unknown>;
    kill: (id: string, reason: string) => Promise<unknown>;
  },
): Promise<string[]> {
  const now = sc.now();
  const expired = sc.store
    .listSandboxes({ states: ['running'] }, { limit: 1000 })
    .items.filter((s) => Date.parse(s.endAt) <= now);
  const done: string[] = [];
  for (const s of expired) {
    await (s.autoPause ? end.pause(s.id, s.autoPauseMemory) : end.kill(s.id, 'timeout')).then(
      () => done.push(s.id),
      (e: unknown) => {
        sc.log.warn({ err: e, sandboxId: s.id }, 'reaping failed');
      },
    );
  }
  return done;
}
