/**
 * Headless Chromium (Debian's `chromium`) for end-to-end tests, driven over the DevTools protocol
 * on a pipe (`--remote-debugging-pipe`: fd 3 carries commands in, fd 4 answers out, each message
 * NUL-terminated), so no debugging port and no npm package is needed. A fresh profile per launch;
 * the flags are the ones docs/ARCHITECTURE.md lists for a browser that talks to nothing unasked.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import type { Readable, Writable } from 'node:stream';

export const CHROMIUM = '/usr/bin/chromium';

export interface Browser {
  /** Opens `url` in a new tab and waits for its load event. */
  open(url: string): Promise<Page>;
  close(): Promise<void>;
}

export interface Page {
  /** Evaluates `expression` in the page (a promise is awaited) and returns its JSON value. */
  eval<T>(expression: string): Promise<T>;
}

interface Reply {
  id?: number;
  method?: string;
  sessionId?: string;
  params?: Record<string, unknown>;
  result?: Record<string, unknown>;
  error?: { message: string };
}

/** The DevTools protocol on a child's fds 3 (commands) and 4 (answers and events). */
function cdpPipe(
  proc: ChildProcess,
  stderr: () => string,
): {
  send: (method: string, params?: object, sessionId?: string) => Promise<Reply>;
  event: (method: string, sessionId: string) => Promise<void>;
} {
  const input = proc.stdio[3] as Writable;
  const output = proc.stdio[4] as Readable;
  const pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  const events: Reply[] = [];
  const waiters: (() => void)[] = [];
  let buf = '';
  let nextId = 1;
  proc.on('exit', (code) => {
    for (const p of pending.values())
      p.reject(new Error(`chromium exited with ${String(code)}; stderr: ${stderr()}`));
    pending.clear();
  });
  output.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf('\0'); i >= 0; i = buf.indexOf('\0')) {
      const msg = JSON.parse(buf.slice(0, i)) as Reply;
      buf = buf.slice(i + 1);
      const p = msg.id === undefined ? undefined : pending.get(msg.id);
      if (p && msg.id !== undefined) {
        pending.delete(msg.id);
        if (msg.error) p.reject(new Error(`chromium: ${msg.error.message}`));
        else p.resolve(msg);
      } else if (msg.method) {
        events.push(msg);
        for (const w of waiters.splice(0)) w();
      }
    }
  });
  return {
    send: (method, params = {}, sessionId) =>
      new Promise((resolve, reject) => {
        const id = nextId++;
        pending.set(id, { resolve, reject });
        input.write(`${JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) })}\0`);
      }),
    /** Resolves when an event `method` of `sessionId` has arrived (the protocol's own signal). */
    event: async (method, sessionId) => {
      while (!events.some((e) => e.method === method && e.sessionId === sessionId))
        await new Promise<void>((r) => waiters.push(r));
    },
  };
}

/** Flags for a headless Chromium in tests: no sandbox (root), no GPU, nothing fetched in the background. */
export const CHROMIUM_FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium`);
  const profile = await mkdtemp('/tmp/kiln-chromium-');
  const proc: ChildProcess = spawn(
    CHROMIUM,
    ['--headless', ...CHROMIUM_FLAGS, `--user-data-dir=${profile}`, '--remote-debugging-pipe', 'about:blank'],
    { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] },
  );
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const { send, event } = cdpPipe(proc, () => stderr);
  return {
    async open(url) {
      const target = await send('Target.createTarget', { url: 'about:blank' });
      const targetId = target.result?.['targetId'] as string;
      const attached = await send('Target.attachToTarget', { targetId, flatten: true });
      const session = attached.result?.['sessionId'] as string;
      await send('Page.enable', {}, session);
      const nav = await send('Page.navigate', { url }, session);
      const failed = nav.result?.['errorText'];
      if (typeof failed === 'string') throw new Error(`chromium could not open ${url}: ${failed}`);
      await event('Page.loadEventFired', session);
      return {
        async eval<T>(expression: string): Promise<T> {
          const r = await send(
            'Runtime.evaluate',
            { expression, awaitPromise: true, returnByValue: true },
            session,
          );
          const ex = r.result?.['exceptionDetails'] as { exception?: { description?: string } } | undefined;
          if (ex) throw new Error(`in the page: ${ex.exception?.description ?? JSON.stringify(ex)}`);
          return (r.result?.['result'] as { value: T }).value;
        },
      };
    },
    async close() {
      const exited = new Promise((r) => proc.once('exit', r));
      if (proc.exitCode === null && proc.signalCode === null) {
        await send('Browser.close').catch(() => undefined);
        await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
        proc.kill('SIGKILL');
      }
      await rm(profile, { recursive: true, force: true });
    },
  };
}
