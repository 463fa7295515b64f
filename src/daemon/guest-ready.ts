import { KilnError } from '../core/errors.ts';
import { consoleExcerpt } from './console.ts';
import type { GuestClient } from './guest-client.ts';

/**
 * Waits until a restored guest's agent answers `/health` on `guest`'s connection, which the
 * `/init` that follows reuses. One attempt keeps its place for up to `attemptTimeoutMs` (a busy
 * guest serves connections in turn; giving up early and reconnecting would start at the back of
 * the queue again); `alive` is asked between attempts (false: the VM died, stop at once). When
 * it gives up, the error carries the guest's last console lines (`consoleTail`; its details'
 * `console`): the VM is killed next, and they say why its agent never came up.
 */
export async function waitGuestReady(
  guest: GuestClient,
  o: {
    timeoutMs: number;
    alive: () => Promise<boolean>;
    consoleTail?: () => Promise<string[]>;
    attemptTimeoutMs?: number;
    what: string;
  },
): Promise<number> {
  const t0 = Date.now();
  let last: string;
  for (;;) {
    const left = o.timeoutMs - (Date.now() - t0);
    try {
      await guest.health(Math.max(1000, Math.min(left, o.attemptTimeoutMs ?? 20_000)));
      return Date.now() - t0;
    } catch (e) {
      last = (e as Error).message;
    }
    if (!(await o.alive()))
      throw await notReady(o, 'guest_agent_error', `the VM died before ${o.what} answered (last: ${last})`);
    if (Date.now() - t0 >= o.timeoutMs)
      throw await notReady(o, 'timeout', `${o.what} did not answer within ${o.timeoutMs} ms (last: ${last})`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function notReady(
  o: { consoleTail?: () => Promise<string[]> },
  code: 'timeout' | 'guest_agent_error',
  message: string,
): Promise<KilnError> {
  const lines = (await o.consoleTail?.().catch(() => [] as string[])) ?? [];
  const lastLine = lines.at(-1);
  return new KilnError(
    code,
    lastLine ? `${message}; the guest's last console line: ${lastLine.slice(0, 300)}` : message,
    lines.length ? { details: { console: consoleExcerpt(lines) } } : {},
  );
}
