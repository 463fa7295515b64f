/**
 * What /init needs root's syscalls for after a restore: the guest's wall clock, and a fresh seed
 * in the kernel's random pool (clones of one snapshot share its CRNG state). Spawning `date` or
 * a one-shot helper costs a fork + exec + dynamic link, several hundred ms on a restored guest under TCG (cold translation cache); instead one
 * python3 process (in every kiln image) is started with the agent, so it is already running in
 * every template snapshot and each /init only writes a line to it. Falls back to `date` when
 * the helper is gone.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { writeFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';

/** What became of /init's entropy seed (the agent's answer header `x-kiln-entropy`). */
export type EntropyResult = 'reseeded' | 'mixed' | 'failed';

// RNDADDENTROPY = _IOW('R', 0x03, int[2]) and RNDRESEEDCRNG = _IO('R', 0x07) (linux/random.h):
// the seed goes into the input pool (credited), then the CRNG is re-keyed from that pool at once,
// so the very next read of /dev/urandom or getrandom(2) on any CPU uses the new key.
const SCRIPT = `
import os, time, fcntl, struct, gc
urandom = os.open("/dev/urandom", os.O_WRONLY | os.O_CLOEXEC)
# Its objects never change again: no collection may walk (and so write) them in every clone.
gc.freeze()
gc.disable()
os.write(1, b"ready\\n")
pending = b""
while True:
    chunk = os.read(0, 4096)
    if not chunk:
        break
    pending += chunk
    while b"\\n" in pending:
        line, pending = pending.split(b"\\n", 1)
        try:
            if line.startswith(b"seed "):
                b = bytes.fromhex(line[5:].decode())
                fcntl.ioctl(urandom, 0x40085203, struct.pack("ii", len(b) * 8, len(b)) + b)
                fcntl.ioctl(urandom, 0x5207)
            else:
                time.clock_settime(time.CLOCK_REALTIME, float(line))
            os.write(1, b"ok\\n")
        except Exception as e:
            os.write(1, ("err " + str(e) + "\\n").encode())
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
    const p = spawn('python3', ['-u', '-I', '-S', '-c', SCRIPT], { stdio: ['pipe', 'pipe', 'ignore'] });
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

  /**
   * Adds `seed` to the kernel's random pool and forces a CRNG reseed (`reseeded`). Without the
   * helper the seed is only written to /dev/urandom (`mixed`: in the input pool, but the CRNG
   * keeps its key until its next scheduled reseed). Never logs the seed.
   */
  async reseed(seed: Buffer): Promise<EntropyResult> {
    const p = this.#proc;
    if (p) {
      const answer = await new Promise<string>((resolve) => {
        this.#waiting.push(resolve);
        p.stdin.write(`seed ${seed.toString('hex')}\n`);
      });
      if (answer === 'ok') return 'reseeded';
    }
    try {
      await writeFile('/dev/urandom', seed);
      return 'mixed';
    } catch {
      return 'failed';
    }
  }

  stop(): void {
    this.#proc?.kill();
    this.#proc = undefined;
  }
}
