/**
 * The dashboard's live updates: ONE ticker for every open page (not one poll per browser), which
 * runs only while a page listens. Each tick it reads the sandbox list once per caller scope and
 * sends it to that scope's pages when it changed; the host figures every HOST_EVERY_TICKS; the
 * new events of the sandbox a page shows. A page's stream starts with the whole state.
 */
import type { DashEvent, DashHost } from '../../core/dashboard-types.ts';
import type { Logger } from 'pino';
import { sees, type Caller } from '../../daemon/scope.ts';
import type { DashboardDeps } from './deps.ts';
import type { SseStream } from './sse.ts';
import { sandboxView, templateNames } from './views.ts';

export const TICK_MS = 1000;
const HOST_EVERY_TICKS = 5;
const LIVE_STATES = ['creating', 'running', 'pausing', 'paused', 'resuming', 'killing'] as const;

interface Listener {
  stream: SseStream;
  caller: Caller | undefined;
  /** The sandbox whose events it wants, and the last event it has. */
  sandbox?: { id: string; after: number };
  lastList?: string;
}

const scopeKey = (c: Caller | undefined): string => (c ? (c.admin ? 'admin' : c.keyId) : 'root');

export class LiveHub {
  readonly #d: DashboardDeps;
  readonly #log: Logger;
  readonly #listeners = new Set<Listener>();
  #timer: NodeJS.Timeout | undefined;
  #ticks = 0;
  #host: DashHost | undefined;
  #busy = false;

  constructor(d: DashboardDeps, log: Logger) {
    this.#d = d;
    this.#log = log;
  }

  /** Adds a page's stream until it closes; the first state is sent at once. */
  add(stream: SseStream, caller: Caller | undefined, sandboxId?: string): void {
    const l: Listener = { stream, caller, ...(sandboxId ? { sandbox: { id: sandboxId, after: 0 } } : {}) };
    this.#listeners.add(l);
    void stream.closed.then(() => {
      this.#listeners.delete(l);
      if (this.#listeners.size === 0) this.#stop();
    });
    this.#timer ??= setInterval(() => {
      void this.#tick();
    }, TICK_MS);
    this.#sendList(l, this.#lists());
    if (this.#host) stream.send('host', this.#host);
    else void this.#refreshHost();
    this.#sendEvents(l);
  }

  get listeners(): number {
    return this.#listeners.size;
  }

  #stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  close(): void {
    this.#stop();
    for (const l of this.#listeners) l.stream.end();
    this.#listeners.clear();
  }

  /** Every live sandbox once, grouped into each scope's JSON list. */
  #lists(): Map<string, string> {
    const { svc } = this.#d;
    const all = svc.list({ states: [...LIVE_STATES], order: 'desc' }, { limit: 1000 }).items;
    const names = templateNames(svc);
    const views = all.map((s) => ({ owner: s.ownerKeyId, view: sandboxView(svc, s, names) }));
    const out = new Map<string, string>();
    for (const l of this.#listeners) {
      const k = scopeKey(l.caller);
      if (!out.has(k))
        out.set(k, JSON.stringify(views.filter((v) => sees(l.caller, v.owner)).map((v) => v.view)));
    }
    return out;
  }

  #sendList(l: Listener, lists: Map<string, string>): void {
    const json = lists.get(scopeKey(l.caller)) ?? this.#lists().get(scopeKey(l.caller)) ?? '[]';
    if (json === l.lastList) return;
    l.lastList = json;
    l.stream.send('sandboxes', JSON.parse(json) as unknown);
  }

  #sendEvents(l: Listener): void {
    if (!l.sandbox) return;
    try {
      const s = this.#d.svc.get(l.sandbox.id);
      if (!sees(l.caller, s.ownerKeyId)) return;
      const page = this.#d.svc.logs(l.sandbox.id, { limit: 100, cursor: String(l.sandbox.after) });
      const items: DashEvent[] = page.items.map((e) => ({
        seq: e.seq,
        at: e.at,
        level: e.level,
        message: e.message,
      }));
      if (items.length) {
        l.sandbox.after = items[items.length - 1]?.seq ?? l.sandbox.after;
        l.stream.send('events', { sandboxId: l.sandbox.id, items });
      }
    } catch {
      // The sandbox's record was purged: nothing more to send.
    }
  }

  async #refreshHost(): Promise<void> {
    try {
      this.#host = await this.#d.host.read();
      for (const l of this.#listeners) l.stream.send('host', this.#host);
    } catch (e) {
      this.#log.warn({ err: e }, 'dashboard: reading the host figures failed');
    }
  }

  async #tick(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      this.#ticks++;
      const lists = this.#lists();
      for (const l of this.#listeners) {
        this.#sendList(l, lists);
        this.#sendEvents(l);
      }
      if (this.#ticks % HOST_EVERY_TICKS === 0) await this.#refreshHost();
    } catch (e) {
      this.#log.warn({ err: e }, 'dashboard: a live update failed');
    } finally {
      this.#busy = false;
    }
  }
}
