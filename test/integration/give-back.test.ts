/**
 * A sandbox gives back what its guest frees (issue 15), with real guests:
 * - disk: a 500 MB file written and deleted in the guest; the VM's qcow2 overlay (`diskBytes` in
 *   the sandbox's stats) grows by it and shrinks back (ext4 mounted with `discard`, QEMU
 *   `discard=unmap`);
 * - memory, with KILN_KSM=on: 300 MB allocated, touched and freed by a process in the guest; the
 *   QEMU's PSS comes back to within 20 MB of its idle PSS (the guest zeroes freed pages,
 *   `init_on_free=1`, and the host's KSM folds them into the zero page).
 * KSM is host-wide, and a kilnd with KILN_KSM=on leaves it on; this test sets it back off when it
 * found it off, so a test run leaves the host's ksmd as it was (its scanning costs the host CPU,
 * which bench/density's "KSM off" figures assume is not spent).
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { startKilnd, type Kilnd } from '../../src/api/kilnd.ts';
import { createLogger } from '../../src/core/log.ts';
import { loadConfig } from '../../src/core/config.ts';
import { sleep } from '../../src/core/proc.ts';
import { KilnClient } from '../../src/sdk/client.ts';
import { ensureDefaultImage } from '../helpers/image.ts';
import { killOwnQemus, purgeHost } from '../helpers/kilnd.ts';
import { KSM_DIR } from '../../src/vmm/qemu/ksm.ts';

const MiB = 2 ** 20;

describe('a sandbox gives back freed disk and memory (real guests)', { timeout: 900_000 }, () => {
  let state: string;
  let k: Kilnd | undefined;
  let c: KilnClient;
  let ksmWas = '';

  const run = async (id: string, cmd: string, user = 'user'): Promise<string> => {
    let out = '';
    const r = await c.exec(id, cmd, {
      user,
      timeoutMs: 300_000,
      onStdout: (b) => (out += b.toString()),
      onStderr: (b) => (out += b.toString()),
    });
    assert.equal(r.exitCode, 0, `${cmd}: ${out}`);
    return out;
  };
  /** Polls the sandbox's stats until `ok` holds of them (or the deadline): the last value. */
  const statsUntil = async (
    id: string,
    ok: (s: { diskBytes: number; pssBytes: number }) => boolean,
    ms: number,
  ): Promise<{ diskBytes: number; pssBytes: number }> => {
    const end = Date.now() + ms;
    for (;;) {
      const s = await c.stats(id);
      if (ok(s) || Date.now() > end) return s;
      await sleep(2000);
    }
  };

  before(async () => {
    await ensureDefaultImage();
    state = await mkdtemp('/tmp/kiln-giveback-');
    ksmWas = (await readFile(`${KSM_DIR}/run`, 'utf8')).trim();
    k = await startKilnd({
      stateDir: state,
      cacheDir: loadConfig().cacheDir,
      log: createLogger({ level: 'warn' }),
      ksm: true,
    });
    c = new KilnClient({ socketPath: k.socketPath });
    await c.buildTemplate({ name: 'base', memoryMiB: 512, vcpus: 1 });
  });

  after(async () => {
    await k?.close();
    killOwnQemus(state);
    await purgeHost(state);
    await rm(state, { recursive: true, force: true });
    if (ksmWas === '0') await writeFile(`${KSM_DIR}/run`, '0');
  });

  it('a deleted 500 MB file shrinks the overlay back (stats diskBytes)', async () => {
    const id = (await c.createSandbox({ template: 'base' })).sandboxId;
    const idle = (await c.stats(id)).diskBytes;
    await run(id, 'head -c 500M /dev/urandom > /home/user/big && sync');
    const full = await statsUntil(id, (s) => s.diskBytes >= idle + 480 * MiB, 30_000);
    assert.ok(
      full.diskBytes >= idle + 480 * MiB,
      `overlay ${full.diskBytes} B after writing 500 MB (idle ${idle} B)`,
    );
    await run(id, 'rm /home/user/big && sync');
    const back = await statsUntil(id, (s) => s.diskBytes <= idle + 20 * MiB, 30_000);
    assert.ok(
      back.diskBytes <= idle + 20 * MiB,
      `overlay ${back.diskBytes} B after deleting the file: not back within 20 MiB of ${idle} B`,
    );
    await c.killSandbox(id);
  });

  it('300 MB allocated and freed in the guest come back to the host (KSM)', async () => {
    const id = (await c.createSandbox({ template: 'base' })).sandboxId;
    const alloc = `python3 -c "
a = bytearray(300 << 20)
for i in range(0, len(a), 4096):
    a[i] = 1
"`;
    // Python's own files in the guest's page cache are not what this measures: load them first.
    await run(id, 'python3 -c pass');
    await sleep(12_000); // stats are sampled every 5 s: the newest is from after that run
    const idle = (await c.stats(id)).pssBytes;
    await run(id, alloc);
    const peak = (await statsUntil(id, (s) => s.pssBytes >= idle + 250 * MiB, 15_000)).pssBytes;
    assert.ok(peak >= idle + 250 * MiB, `PSS ${peak} B after touching 300 MB (idle ${idle} B)`);
    const back = await statsUntil(id, (s) => s.pssBytes <= idle + 20 * MiB, 240_000);
    assert.ok(
      back.pssBytes <= idle + 20 * MiB,
      `PSS ${Math.round(back.pssBytes / MiB)} MiB 240 s after the free: not within 20 MiB of idle ${Math.round(idle / MiB)} MiB`,
    );
    await c.killSandbox(id);
  });
});
