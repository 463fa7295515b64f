import { join } from 'node:path';
import type { Logger } from 'pino';
import type { VmInfo, VmState } from '../driver.ts';
import { QmpClient } from './qmp.ts';
import { FILES } from './record.ts';

type Fault = NonNullable<VmInfo['fault']>;

/** QMP events after which a VM's run state must be asked again (see QmpSessions#running). */
const RUN_STATE_EVENTS = new Set([
  'STOP',
  'RESUME',
  'SHUTDOWN',
  'RESET',
  'GUEST_PANICKED',
  'BLOCK_IO_ERROR',
  'MIGRATION',
  'SUSPEND',
  'WAKEUP',
]);

/** How long a running VM's state is believed without asking QEMU (events say when it changes). */
export const RUNNING_RECHECK_MS = 30_000;

/**
 * The driver's QMP connections, one per VM, opened on first use and dropped when QEMU closes
 * them; and what QEMU said on them that matters later (its last disk I/O error per VM).
 */
export class QmpSessions {
  readonly #runDir: string;
  readonly #log: Logger;
  readonly #qmp = new Map<string, Promise<QmpClient>>();
  /** The last disk I/O error QEMU reported per VM (QMP BLOCK_IO_ERROR): why it stopped a VM. */
  readonly #ioErrors = new Map<string, { nospace: boolean; reason: string; operation: string }>();
  /**
   * VMs QEMU last said run, and when: answered without asking again until an event says the run
   * state may have changed, or RUNNING_RECHECK_MS passed. Asking every VM every second woke each
   * QEMU a second for nothing; with a hundred idle VMs that was most of their cost.
   */
  readonly #running = new Map<string, { q: QmpClient; at: number }>();
  /** Bumped per VM by every event that may change its run state (so a reply in flight is not cached). */
  readonly #epoch = new Map<string, number>();
  readonly #now: () => number;

  constructor(runDir: string, log: Logger, now: () => number = Date.now) {
    this.#runDir = runDir;
    this.#log = log;
    this.#now = now;
  }

  /** Takes over the connection `start` opened. */
  adopt(id: string, q: QmpClient): void {
    this.#watch(id, q);
    this.#qmp.set(id, Promise.resolve(q));
    q.once('close', () => this.#qmp.delete(id));
  }

  client(id: string): Promise<QmpClient> {
    let c = this.#qmp.get(id);
    if (!c) {
      c = QmpClient.connect(join(this.#runDir, id, FILES.qmp)).then((q) => {
        this.#watch(id, q);
        q.once('close', () => this.#qmp.delete(id));
        return q;
      });
      c.catch(() => this.#qmp.delete(id));
      this.#qmp.set(id, c);
    }
    return c;
  }

  /** Closes VM `id`'s connection; with `gone`, also forgets what QEMU said about it. */
  forget(id: string, gone = false): void {
    const c = this.#qmp.get(id);
    this.#qmp.delete(id);
    this.#running.delete(id);
    if (gone) {
      this.#ioErrors.delete(id);
      this.#epoch.delete(id);
    }
    c?.then((q) => {
      q.close();
    }).catch(() => undefined);
  }

  closeAll(): void {
    for (const id of [...this.#qmp.keys()]) this.forget(id);
  }

  /** Remembers the VM's last disk I/O error (QMP BLOCK_IO_ERROR), to say why QEMU stopped it. */
  #watch(id: string, q: QmpClient): void {
    q.once('close', () => {
      if (this.#running.get(id)?.q === q) this.#running.delete(id);
    });
    q.on('event', (e) => {
      if (RUN_STATE_EVENTS.has(e.event)) {
        this.#running.delete(id);
        this.#epoch.set(id, (this.#epoch.get(id) ?? 0) + 1);
      }
      if (e.event !== 'BLOCK_IO_ERROR') return;
      const d = e.data ?? {};
      const err = {
        nospace: d['nospace'] === true,
        reason: typeof d['reason'] === 'string' ? d['reason'] : 'I/O error',
        operation: typeof d['operation'] === 'string' ? d['operation'] : 'write',
      };
      this.#ioErrors.set(id, err);
      this.#log.warn({ vmId: id, ...err, action: d['action'] }, 'QEMU reports a disk I/O error');
    });
  }

  /**
   * The run state QEMU reports for a live VM. `alive` is asked again when QMP fails: a VM whose
   * process died meanwhile is `stopped`, anything else is the error.
   */
  async runState(id: string, alive: () => boolean): Promise<{ state: VmState; fault?: Fault }> {
    if (!alive()) return { state: 'stopped' };
    const known = this.#running.get(id);
    if (known && this.#qmp.has(id) && this.#now() - known.at < RUNNING_RECHECK_MS)
      return { state: 'running' };
    try {
      const q = await this.client(id);
      const epoch = this.#epoch.get(id) ?? 0;
      const s = await q.execute<{ status: string; running: boolean }>('query-status', undefined, {
        timeoutMs: 5000,
      });
      if (s.running) {
        if ((this.#epoch.get(id) ?? 0) === epoch && this.#qmp.has(id))
          this.#running.set(id, { q, at: this.#now() });
        return { state: 'running' };
      }
      if (s.status === 'shutdown' || s.status === 'guest-panicked' || s.status === 'internal-error')
        return { state: 'stopped' };
      // QEMU's default werror=enospc stops the VM when a write to its disk fails for lack of space.
      if (s.status === 'io-error') return { state: 'paused', fault: await this.#ioFault(id, q) };
      return { state: 'paused' };
    } catch (e) {
      if (!alive()) return { state: 'stopped' };
      throw e;
    }
  }

  /** Why QEMU stopped a VM on a disk error: the last BLOCK_IO_ERROR event and query-block's io-status. */
  async #ioFault(id: string, q: QmpClient): Promise<Fault> {
    const ev = this.#ioErrors.get(id);
    const blocks = await q
      .execute<{ device: string; 'io-status'?: string }[]>('query-block', undefined, { timeoutMs: 5000 })
      .catch(() => []);
    const nospace = ev?.nospace === true || blocks.some((b) => b['io-status'] === 'nospace');
    const reason = ev?.reason ?? (nospace ? 'No space left on device' : 'I/O error');
    return {
      kind: 'io_error',
      nospace,
      message: `QEMU stopped the VM: a ${ev?.operation ?? 'write'} to its disk failed (${reason})`,
    };
  }
}
