/**
 * Sets the guest's wall clock after a restore. Spawning `date` costs a fork + exec + dynamic
 * link, several hundred ms on a restored guest under TCG (cold translation cache); instead one
 * python3 process (in every kiln image) is started with the agent, so it is already running in
 * every template snapshot and each /init only writes a line to it. Falls back to `date` when
 * the helper is gone.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { createInterface } from 'node:readline';

const SCRIPT = `
import sys, time
print("ready", flush=True)
for line in sys.stdin:
    try:
        time.clock_settime(time.CLOCK_REALTIME, float(line))
        print("ok", flush=True)
    except Exception as e:
        print("err " + str(e), flush=True)
`;

export class ClockSetter {
  #proc: ChildProcessByStdio<Writable, Readable, null> | undefined;
  #waiting: ((line: string) => void)[] = [];

  /**
   * Starts the helper (call once, at agent start-up). Resolves once it waits for input (or has
   * failed, or after `timeoutMs`): a snapshot taken after that does not catch it mid-start-up,
   * which would cost every restore the rest of Python's start-up.
   */
  start(timeoutMs = 20_000): Promise<void> {
    const p = spawn('python3', ['-u', '-c', SCRIPT], { stdio: ['pipe', 'pipe', 'ignore'] });
    let ready: () => void = () => undefined;
    const started = new Promise<void>((r) => (ready = r));
    const timer = setTimeout(ready, timeoutMs);
    timer.unref();
    this.#waiting.push(() => {
      clearTimeout(timer);
      ready();
    });
    p.on('error', () => {
      this.#proc = undefined;
      ready();
    });
    p.on('exit', () => {
      this.#proc = undefined;
      for (const w of this.#waiting.splice(0)) w('err helper exited');
    });
    createInterface({ input: p.stdout }).on('line', (l) => this.#waiting.shift()?.(l));
    this.#proc = p;
    return started;
  }

  /** Sets the clock to `ms` (Unix epoch milliseconds). Resolves either way; returns how. */
  async set(ms: number): Promise<'helper' | 'date' | 'failed'> {
    const p = this.#proc;
    if (p) {
      const answer = await new Promise<string>((resolve) => {
        this.#waiting.push(resolve);
        p.stdin.write(`${(ms / 1000).toFixed(3)}\n`);
      });
      if (answer === 'ok') return 'helper';
    }
    return new Promise((resolve) => {
      spawn('date', ['-u', '-s', `@${(ms / 1000).toFixed(3)}`], { stdio: 'ignore' })
        .on('close', (code) => {
          resolve(code === 0 ? 'date' : 'failed');
        })
        .on('error', () => {
          resolve('failed');
        });
    });
  }

  stop(): void {
    this.#proc?.kill();
    this.#proc = undefined;
  }
}
