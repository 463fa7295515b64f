/**
 * A full state disk, with a real guest: kilnd's state dir is a small tmpfs, a sandbox's guest
 * writes until the tmpfs is full (QEMU then stops the VM on the write error). kilnd must keep
 * answering, refuse creates with `no_space` (507 on the E2B API), survive its log (in the same
 * state dir) failing, refuse a second daemon on the same state dir, and restart cleanly once
 * there is space again, re-adopting the VM.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { appendFileSync, closeSync, openSync, readFileSync, statSync, statfsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { startKilnd, type Kilnd } from '../../src/api/kilnd.ts';
import { createLogger, fdDestination, type Logger } from '../../src/core/log.ts';
import { loadConfig } from '../../src/core/config.ts';
import { sleep } from '../../src/core/proc.ts';
import { KilnClient } from '../../src/sdk/client.ts';
import type { LivenessOpts } from '../../src/daemon/liveness.ts';
import { ensureDefaultImage } from '../helpers/image.ts';
import { purgeNetworks } from '../../src/net/sandbox-networks.ts';
import { killOwnQemus, ownQemus } from '../helpers/kilnd.ts';

const MAIN = fileURLToPath(new URL('../../src/api/main.ts', import.meta.url));
const MiB = 2 ** 20;

describe('a full state disk (tmpfs filled from inside a guest)', { timeout: 900_000 }, () => {
  let root: string;
  let state: string;
  let logFd: number;
  let log: Logger;
  let diskMiB: number;
  let k: Kilnd | undefined;
  let c: KilnClient;
  let sbx = '';
  const free = (): number => {
    const s = statfsSync(state);
    return s.bavail * s.bsize;
  };
  const remount = (bytes: number): void => {
    execFileSync('mount', ['-o', `remount,size=${Math.ceil(bytes / MiB)}m`, state]);
  };
  const start = async (o: { diskOvercommitRatio?: number; liveness?: LivenessOpts } = {}): Promise<Kilnd> => {
    k = await startKilnd({
      stateDir: state,
      cacheDir: loadConfig().cacheDir,
      log,
      e2bApiPort: 0,
      e2bSandboxPort: 0,
      ...o,
    });
    return k;
  };
  const stop = async (): Promise<void> => {
    await k?.close();
    k = undefined;
  };
  /** This test's QEMU processes (their paths are under its state dir). */
  const qemus = (): string[] => ownQemus(state);

  before(async () => {
    diskMiB = statSync((await ensureDefaultImage()).rootfs).size / MiB;
    root = await mkdtemp('/tmp/kiln-full-');
    state = join(root, 'state');
    execFileSync('mkdir', ['-m', '0700', state]);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=3g,mode=0700', 'tmpfs', state]);
    // The daemon's log lives in the state dir, as a detached kilnd's does (one logger for every
    // start in this file, as one file is for a detached kilnd's restarts).
    logFd = openSync(join(state, 'kilnd.log'), 'a');
    log = createLogger({ destination: fdDestination(logFd), bindings: { component: 'kilnd' } });
    c = new KilnClient({ socketPath: join(state, 'kilnd.sock') });
  });
  after(async () => {
    await stop().catch(() => undefined);
    killOwnQemus(state);
    await purgeNetworks(state);
    closeSync(logFd);
    // A QEMU just killed may still hold its files for a moment.
    for (let i = 0; i < 50; i++) {
      try {
        execFileSync('umount', [state]);
        break;
      } catch {
        await sleep(100);
      }
    }
    await rm(root, { recursive: true, force: true });
  });

  it('admission: a create whose disk could not grow to its size is refused with no_space', async () => {
    await start();
    await c.buildTemplate({ name: 'base', memoryMiB: 256, vcpus: 1 });
    // Leave 300 MiB free: far less than the guest's 2 GiB disk.
    const used = statfsSync(state).blocks * statfsSync(state).bsize - free();
    remount(used + 300 * MiB);
    await assert.rejects(c.createSandbox({ template: 'base' }), {
      code: 'no_space',
      message:
        /not enough free disk space for a new sandbox: \d+ MiB free .*, \d+ MiB needed \(its \d+ MiB disk.*free disk space/,
    });
    await stop();
  });

  it('a guest fills the disk: creates get no_space (507), kilnd keeps answering, its log fails harmlessly', async () => {
    // Admit sandboxes as if they used a thousandth of their disks, so one starts on this tmpfs.
    await start({ diskOvercommitRatio: 1000 });
    sbx = (await c.createSandbox({ template: 'base' })).sandboxId;
    const key = k?.keys.create('e2b', { admin: true }).key ?? '';
    const detail = await fetch(`${k?.e2bApiUrl ?? ''}/sandboxes/${sbx}`, { headers: { 'X-API-KEY': key } });
    assert.equal(
      ((await detail.json()) as { diskSizeMB?: number }).diskSizeMB,
      diskMiB,
      'the guest disk size',
    );
    // The guest writes 1 GiB in the background; the tmpfs has ~300 MiB: QEMU stops the VM
    // when a write fails (werror=enospc) and the command never finishes.
    await c.exec(
      sbx,
      'nohup dd if=/dev/zero of=/home/user/big bs=1M count=1024 oflag=direct >/dev/null 2>&1 &',
    );
    // Wait until the guest's writes stop: the free space stays the same for 5 s.
    const t0 = Date.now();
    for (let last = free(), still = 0; still < 10;) {
      assert.ok(Date.now() - t0 < 300_000, `the guest did not fill the disk (${free()} bytes free)`);
      await sleep(500);
      const now = free();
      still = now === last ? still + 1 : 0;
      last = now;
    }
    assert.ok(free() < 64 * MiB, `the guest wrote until the disk was full, ${free()} bytes free`);
    // Whatever the guest left (less than a qcow2 cluster or two) goes too: the disk is full.
    assert.throws(
      () => {
        for (;;) appendFileSync(join(state, 'filler'), Buffer.alloc(4096));
      },
      { code: 'ENOSPC' },
    );
    assert.equal(free(), 0);

    await assert.rejects(c.createSandbox({ template: 'base' }), {
      code: 'no_space',
      message: /not enough free disk space for a new sandbox: 0 MiB free.*free disk space .* and retry/,
    });
    const e2b = await fetch(`${k?.e2bApiUrl ?? ''}/v2/sandboxes`, {
      method: 'POST',
      headers: { 'X-API-KEY': key, 'content-type': 'application/json' },
      body: JSON.stringify({ templateID: 'base' }),
    });
    assert.equal(e2b.status, 507);
    assert.match(((await e2b.json()) as { message: string }).message, /free disk space/);
    // Every request logs a line, none of which can be written; kilnd goes on answering.
    for (let i = 0; i < 40; i++) assert.equal((await c.health()).ok, true);
    assert.deepEqual(
      (await c.listSandboxes({ states: ['running'] })).items.map((s) => s.sandboxId),
      [sbx],
    );
    // The liveness watcher sees QEMU's io-error stop (QMP) and shows it on the sandbox.
    let cond = (await c.getSandbox(sbx)).condition?.code;
    for (let i = 0; i < 60 && cond !== 'disk_full'; i++) {
      await sleep(500);
      cond = (await c.getSandbox(sbx)).condition?.code;
    }
    assert.equal(cond, 'disk_full');
  });

  it('a second daemon on the same state dir is refused while the first runs', async () => {
    const child = spawn(process.execPath, [MAIN], {
      env: { ...process.env, KILN_STATE_DIR: state, KILN_E2B_API_PORT: '0', KILN_E2B_SANDBOX_PORT: '0' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 1, stderr);
    assert.match(
      stderr,
      new RegExp(`"code":"conflict".*already runs on this state dir \\(pid ${process.pid} holds`),
    );
    assert.equal((await c.health()).ok, true, 'the first daemon is untouched');
    assert.equal(qemus().length, 1, 'and so is its VM');
  });

  it('a clean restart once there is space again: the VM is re-adopted and runs on', async () => {
    await stop();
    assert.equal(qemus().length, 1, 'stopping kilnd leaves the VM running');
    // Free space: a bigger disk (the guest's writes already in its overlay stay).
    remount(statfsSync(state).blocks * statfsSync(state).bsize + 1536 * MiB);
    execFileSync('rm', [join(state, 'filler')]);
    // QEMU keeps a VM stopped on a write error until told to go on.
    // With space back, the restarted kilnd's liveness watcher lets the VM run again by itself.
    await start({ diskOvercommitRatio: 1000, liveness: { diskRetryEveryMs: 500 } });
    let s = await c.getSandbox(sbx);
    for (let i = 0; i < 60 && s.condition !== null; i++) {
      await sleep(500);
      s = await c.getSandbox(sbx);
    }
    assert.equal(s.state, 'running');
    assert.equal(s.condition, null, 'the disk_full condition is cleared once the VM runs again');
    let out = '';
    const r = await c.exec(sbx, 'pkill dd; sleep 1; test -s /home/user/big && echo alive', {
      onStdout: (x) => (out += x.toString()),
    });
    assert.equal(r.exitCode, 0);
    assert.equal(out, 'alive\n');
    assert.equal(qemus().length, 1);
    // The log lost lines while the disk was full, and says so now that it can be written.
    assert.match(
      readFileSync(join(state, 'kilnd.log'), 'utf8'),
      /\d+ log lines were lost: the log could not be written \(ENOSPC\)/,
    );
    await c.killSandbox(sbx);
    assert.deepEqual(qemus(), []);
    await stop();
  });
});
