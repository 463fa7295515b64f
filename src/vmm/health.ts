import { request } from 'node:http';
import { KilnError } from '../core/errors.ts';
import { sleep } from '../core/proc.ts';

export interface WaitHttpOpts {
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Called between attempts; return false to give up at once (e.g. QEMU died). */
  alive?: () => boolean | Promise<boolean>;
  /** Per-attempt timeout (default 2 s). */
  attemptTimeoutMs?: number;
  /** Pause between attempts (default 50 ms). */
  intervalMs?: number;
}

/** One GET; resolves with the status code, rejects on connection errors and timeouts. */
export function httpGetStatus(url: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'GET', timeout: timeoutMs, agent: false }, (res) => {
      res.resume();
      res.on('end', () => {
        resolve(res.statusCode ?? 0);
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/**
 * Waits until `url` answers with a 2xx status. The forwarded port accepts TCP connections before
 * the guest listens, so readiness is a real HTTP answer, never a connect.
 */
export async function waitForHttp(url: string, opts: WaitHttpOpts = {}): Promise<number> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const t0 = Date.now();
  let last: string;
  for (;;) {
    if (opts.signal?.aborted) throw new KilnError('cancelled', `waiting for ${url}: cancelled`);
    try {
      const status = await httpGetStatus(url, opts.attemptTimeoutMs ?? 2000);
      if (status >= 200 && status < 300) return Date.now() - t0;
      last = `HTTP ${status}`;
    } catch (e) {
      last = (e as Error).message;
    }
    if (opts.alive && !(await opts.alive())) {
      throw new KilnError('guest_agent_error', `the VM died before ${url} answered (last: ${last})`);
    }
    if (Date.now() - t0 > timeoutMs) {
      throw new KilnError('timeout', `${url} did not answer within ${timeoutMs} ms (last: ${last})`);
    }
    await sleep(opts.intervalMs ?? 50);
  }
}
