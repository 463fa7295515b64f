/**
 * Hung and dying guests, on real QEMU VMs: a stopped QEMU (SIGSTOP) makes exec fail within its
 * deadline and the liveness watcher flag the sandbox `unresponsive` (cleared on SIGCONT); a guest
 * whose kernel dies has its console's last words as its end reason. Deadlines are short here
 * (service options) so the test stays quick.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { nullLogger } from '../../src/core/log.ts';
import { sleep } from '../../src/core/proc.ts';
import { HttpGuestClient } from '../../src/daemon/guest-client.ts';
import { SandboxService, type BootImage } from '../../src/daemon/sandbox-service.ts';
import { SqliteStore } from '../../src/store/sqlite-store.ts';
import { QemuDriver } from '../../src/vmm/qemu/qemu-driver.ts';
import { ensureDefaultImage } from '../helpers/image.ts';

/** Polls `f` until it is true; fails with `what` after `ms`. */
async function until(what: string, ms: number, f: () => boolean): Promise<number> {
  const t0 = Date.now();
  while (!f()) {
    assert.ok(Date.now() - t0 < ms, `${what} within ${ms} ms`);
    await sleep(100);
  }
  return Date.now() - t0;
}

describe('hung and dying guests (real VMs)', { timeout: 600_000 }, () => {
  let root: string;
  let image: BootImage;
  let store: SqliteStore;
  let driver: QemuDriver;
  let svc: SandboxService;

  before(async () => {
    const img = await ensureDefaultImage();
    image = { key: img.key, kernel: img.kernel, initrd: img.initrd, rootfs: img.rootfs };
    root = await mkdtemp('/tmp/kiln-hung-');
    store = new SqliteStore(`${root}/state.db`);
    driver = new QemuDriver({ runDir: `${root}/vms` });
    svc = new SandboxService({
      store,
      driver,
      guest: (o) => new HttpGuestClient(o),
      image: () => Promise.resolve(image),
      dataDir: `${root}/data`,
      log: nullLogger,
      guestTimeouts: { execIdleMs: 3000 },
      liveness: { probeEveryMs: 500, probeTimeoutMs: 1000, failuresToFlag: 2 },
    });
    await svc.buildTemplate('base', image, { memoryMiB: 512, vcpus: 1 });
    svc.startBackground({ livenessEveryMs: 250, reapEveryMs: 60_000 });
  });
  after(async () => {
    svc.stopBackground();
    for (const id of await driver.list()) await driver.kill(id);
    await driver.close();
    store.close();
    await rm(root, { recursive: true, force: true });
  });

  it('a SIGSTOPped QEMU: exec fails within its deadline, the sandbox is flagged unresponsive, SIGCONT clears it', async () => {
    const s = await svc.create({ template: 'base' });
    assert.equal((await svc.exec(s.id, 'echo hi')).stdout, 'hi\n');
    const { pid } = await driver.status(s.id);
    process.kill(pid, 'SIGSTOP'); // this test's own QEMU only
    try {
      let t0 = Date.now();
      await assert.rejects(svc.exec(s.id, 'echo hi'), {
        code: 'guest_agent_error',
        message: /not responding/,
      });
      const first = Date.now() - t0;
      assert.ok(first < 6000, `exec failed after ${first} ms (idle deadline 3000 ms)`);
      await until('flagged unresponsive', 20_000, () => svc.get(s.id).condition?.code === 'unresponsive');
      assert.equal(svc.get(s.id).state, 'running');
      // Flagged: exec now fails after one short probe, saying why.
      t0 = Date.now();
      await assert.rejects(svc.exec(s.id, 'echo hi'), {
        code: 'guest_agent_error',
        message: new RegExp(`sandbox ${s.id} is not responding \\(since .*has not answered /health`),
      });
      assert.ok(Date.now() - t0 < 2500, `flagged exec failed after ${Date.now() - t0} ms`);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await until('the mark cleared', 20_000, () => svc.get(s.id).condition === null);
    assert.equal((await svc.exec(s.id, 'echo back')).stdout, 'back\n');
    assert.ok(svc.logs(s.id).items.some((e) => e.message.startsWith('sandbox unresponsive: ')));
    await svc.kill(s.id);
  });

  it("a guest whose kernel dies: the sandbox's end reason is the kernel's panic line from the console", async () => {
    const s = await svc.create({ template: 'base' });
    // A fork bomb as root (`:(){ :|:& };:`) does kill the guest here, by a kernel panic, but only
    // after ~160 s under TCG; the kernel's own crash trigger panics it at once. What the test
    // checks is the same: the panic line, printed before a long stack dump, is the end reason.
    const crash = svc.exec(s.id, 'echo c > /proc/sysrq-trigger', { user: 'root' }).catch((e: unknown) => e);
    const ms = await until('the VM died and was marked dead', 60_000, () => svc.get(s.id).state === 'dead');
    const r = svc.get(s.id).endReason ?? '';
    process.stderr.write(`# kernel crash: marked dead after ${ms} ms: ${r}\n`);
    assert.equal(r, 'vm exited: Kernel panic - not syncing: sysrq triggered crash');
    const ev = svc.logs(s.id).items.find((e) => e.message === r);
    const excerpt = ev?.data?.['console'] as string[];
    assert.ok(
      excerpt.some((l) => l.includes('Kernel panic - not syncing')),
      excerpt.join('\n'),
    );
    assert.deepEqual(await driver.list(), [], 'the VM directory was removed after it was read');
    await crash;
  });
});
