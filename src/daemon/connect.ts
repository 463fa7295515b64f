/**
 * Connecting to a sandbox (E2B's `Sandbox.connect`) and resuming one on traffic (autoResume):
 * the policy of when a client's arrival resumes a paused sandbox or extends a running one's life.
 * The E2B API and the envd proxy only call these.
 */
import { KilnError, isKilnError } from '../core/errors.ts';
import type { SandboxRecord } from '../core/domain.ts';
import type { OpCtx, SandboxService } from './sandbox-service.ts';

export interface Connected {
  sandbox: SandboxRecord;
  /** True when this connect resumed the sandbox (E2B answers 201 then, 200 otherwise). */
  resumed: boolean;
}

type Svc = Pick<SandboxService, 'get' | 'resume' | 'setTimeout'>;

/** Paused, or on its way into or out of a pause. */
const asleep = (s: SandboxRecord): boolean =>
  s.state === 'paused' || s.state === 'pausing' || s.state === 'resuming';

export class SandboxConnector {
  readonly #svc: Svc;
  readonly #now: () => number;
  /** Resumes on traffic in flight: one per sandbox, however many requests wait for it. */
  readonly #resuming = new Map<string, Promise<unknown>>();

  /** `now` must be the service's clock (kilnd passes the same one to both). */
  constructor(svc: Svc, now: () => number = Date.now) {
    this.#svc = svc;
    this.#now = now;
  }

  /**
   * Connects to sandbox `id`: a paused one is resumed (with `timeoutS`); one being paused is
   * resumed once that is done; one being resumed (by autoResume) is simply connected to. A
   * running one lives at least `timeoutS` more: connecting never shortens a sandbox's life.
   * `memory: false` (E2B's `onResume: 'reboot'`): a resume cold-boots it on its pause's disk;
   * nothing for a running sandbox.
   */
  async connect(
    id: string,
    o: { timeoutS?: number | undefined; memory?: boolean | undefined },
    ctx: OpCtx = {},
  ): Promise<Connected> {
    const s = this.#svc.get(id);
    const timeoutS = o.timeoutS;
    if (asleep(s)) {
      try {
        const r = await this.#svc.resume(id, { timeoutS, memory: o.memory }, ctx);
        return { sandbox: r, resumed: true };
      } catch (e) {
        // Resumed by someone else meanwhile: connected all the same.
        if (isKilnError(e) && e.code === 'invalid_state' && this.#svc.get(id).state === 'running')
          return { sandbox: this.#svc.get(id), resumed: false };
        throw e;
      }
    }
    if (s.state !== 'running') throw new KilnError('invalid_state', `sandbox ${id} is ${s.state}`);
    if (timeoutS !== undefined && Date.parse(s.endAt) < this.#now() + timeoutS * 1000)
      return { sandbox: this.#svc.setTimeout(id, timeoutS), resumed: false };
    return { sandbox: s, resumed: false };
  }

  /**
   * Traffic for sandbox `id` arrived (the envd proxy): a paused sandbox created with autoResume
   * resumes first (once, however many requests wait), unless its pause kept the filesystem
   * only; any other is left as it is.
   */
  async resumeOnTraffic(id: string): Promise<void> {
    const s = this.#svc.get(id);
    // A filesystem-only pause is resumed by connect only (as in E2B): traffic does not reboot it.
    if (!s.autoResume || !asleep(s) || s.pauseKind === 'filesystem') return;
    let p = this.#resuming.get(id);
    if (!p) {
      p = this.#svc
        .resume(id)
        .catch((e: unknown) => {
          // Someone else resumed it first: fine.
          if (this.#svc.get(id).state !== 'running') throw e;
        })
        .finally(() => this.#resuming.delete(id));
      this.#resuming.set(id, p);
    }
    await p;
  }
}
