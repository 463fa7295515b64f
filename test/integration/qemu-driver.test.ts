/**
 * The QEMU driver against real guests under TCG (KVM where a probe shows it works), booted from
 * the image `kiln image build` makes.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { pidAlive, sleep } from '../../src/core/proc.ts';
import { vmmDriverContract } from '../../src/vmm/driver.contract.ts';
import type { VmSpec } from '../../src/vmm/driver.ts';
import { httpGetStatus, waitForHttp } from '../../src/vmm/health.ts';
import { faultyIo } from '../../src/vmm/qemu/host-io.ts';
import { QemuDriver } from '../../src/vmm/qemu/qemu-driver.ts';
import { ensureDefaultImage } from '../helpers/image.ts';

const BOOT_TIMEOUT_MS = 120_000;

async function fixture(): Promise<{ runDir: string; spec: (id: string) => VmSpec; root: string }> {
  const img = await ensureDefaultImage();
  // Short path: QMP socket paths must fit in 107 bytes.
  const root = await mkdtemp('/tmp/kiln-it-');
  return {
    root,
    runDir: `${root}/vms`,
    spec: (id) => ({
      id,
      boot: { kernel: img.kernel, initrd: img.initrd, rootfs: img.rootfs },
      resources: { memoryMiB: 256, vcpus: 1 },
      network: { kind: 'restricted' },
    }),
  };
}

const portClosed = (host: string, port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = connect(port, host);
    s.on('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.on('error', () => {
      resolve(true);
    });
  });

/** This test's QEMU processes only (their pid files sit under `runDir`): other runs may share the host. */
const qemuPids = (runDir: string): number[] => {
  try {
    return execFileSync('pgrep', ['-f', `qemu-system-x86_64 -name kiln-.* -pidfile ${runDir}/`], {
      encoding: 'utf8',
    })
      .trim()
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
};

vmmDriverContract('QemuDriver (real guests)', async () => {
  const f = await fixture();
  const faults = faultyIo();
  const driver = new QemuDriver({ runDir: f.runDir, io: faults.io });
  return {
    driver,
    reattach: () => new QemuDriver({ runDir: f.runDir }),
    spec: f.spec,
    bootTimeoutMs: BOOT_TIMEOUT_MS,
    loseDir: (id) => rm(`${f.runDir}/${id}`, { recursive: true, force: true }),
    processAlive: (_id, pid) => pidAlive(pid),
    failIo: (errno) => {
      faults.fail(errno);
    },
    cleanup: async () => {
      for (const id of await driver.list()) await driver.kill(id);
      await driver.close();
      await rm(f.root, { recursive: true, force: true });
    },
  };
});

describe('QemuDriver with real guests', () => {
  let f: Awaited<ReturnType<typeof fixture>>;
  let driver: QemuDriver;
  before(async () => {
    f = await fixture();
    driver = new QemuDriver({ runDir: f.runDir });
  });
  after(async () => {
    for (const id of await driver.list()) await driver.kill(id);
    await driver.close();
    await rm(f.root, { recursive: true, force: true });
  });

  it('boots, the guest agent answers /health through the forward, and stop leaves nothing behind', async () => {
    const before = qemuPids(f.runDir);
    const info = await driver.start(f.spec('health'));
    const { host, port } = info.agent;
    assert.equal(host, '127.77.0.1', "forwarded on kiln's own loopback address");
    await waitForHttp(`http://${host}:${port}/health`, { timeoutMs: BOOT_TIMEOUT_MS });
    assert.equal(await httpGetStatus(`http://${host}:${port}/health`, 5000), 204);
    assert.ok(existsSync(`${info.dir}/overlay.qcow2`) && existsSync(`${info.dir}/qmp.sock`));
    assert.ok(qemuPids(f.runDir).includes(info.pid));
    await driver.stop('health');
    assert.equal(pidAlive(info.pid), false, 'no QEMU process');
    assert.equal(existsSync(info.dir), false, 'no socket, overlay, log or record');
    assert.equal(await portClosed(host, port), true, 'the forwarded port is released');
    assert.deepEqual(qemuPids(f.runDir).sort(), before.sort());
  });

  it('boots two VMs at once from one base image without interference', async () => {
    const img = await ensureDefaultImage();
    const baseBefore = statSync(img.rootfs);
    const [a, b] = await Promise.all([driver.start(f.spec('twin-a')), driver.start(f.spec('twin-b'))]);
    const pa = a.agent.port;
    const pb = b.agent.port;
    assert.notEqual(a.pid, b.pid);
    assert.notEqual(pa, pb);
    await Promise.all([
      waitForHttp(`http://${a.agent.host}:${pa}/health`, { timeoutMs: BOOT_TIMEOUT_MS }),
      waitForHttp(`http://${b.agent.host}:${pb}/health`, { timeoutMs: BOOT_TIMEOUT_MS }),
    ]);
    // Each VM writes only to its own overlay, backed by the untouched base image.
    for (const vm of [a, b]) {
      const info = JSON.parse(
        execFileSync('qemu-img', ['info', '--output=json', '-U', `${vm.dir}/overlay.qcow2`], {
          encoding: 'utf8',
        }),
      ) as {
        'backing-filename': string;
      };
      assert.equal(info['backing-filename'], img.rootfs);
    }
    await driver.stop('twin-a');
    assert.equal(
      await httpGetStatus(`http://${b.agent.host}:${pb}/health`, 5000),
      204,
      'b still serves after a stopped',
    );
    assert.equal((await driver.status('twin-b')).state, 'running');
    await driver.stop('twin-b');
    const baseAfter = statSync(img.rootfs);
    assert.equal(baseAfter.mtimeMs, baseBefore.mtimeMs, 'base image untouched');
    assert.equal(baseAfter.size, baseBefore.size);
  });

  it('stop escalates to SIGKILL when QEMU does not answer the graceful quit', async () => {
    const info = await driver.start(f.spec('frozen'));
    process.kill(info.pid, 'SIGSTOP'); // QEMU can neither answer QMP nor exit on its own
    const t0 = Date.now();
    await driver.stop('frozen', { timeoutMs: 1000 });
    assert.ok(Date.now() - t0 < 10_000);
    assert.equal(pidAlive(info.pid), false);
    assert.equal(existsSync(info.dir), false);
  });

  it('notices a VM whose QEMU was killed from outside, and kill cleans it up', async () => {
    const info = await driver.start(f.spec('victim'));
    process.kill(info.pid, 'SIGKILL');
    const t0 = Date.now();
    while ((await driver.status('victim')).state !== 'stopped') {
      assert.ok(Date.now() - t0 < 2000, 'seen dead within 2 s');
      await sleep(50);
    }
    await driver.kill('victim');
    assert.equal(existsSync(info.dir), false);
    assert.deepEqual(await driver.list(), []);
  });
});
