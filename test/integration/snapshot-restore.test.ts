/**
 * The template snapshot recipe on real QEMU guests: boot with RAM in a shared file, save device
 * state (x-ignore-shared), keep the disk overlay as a frozen layer; then restore clones with a
 * private copy-on-write mapping of that RAM and their own overlays. Files and processes of the
 * saved guest are in every clone; clones do not see each other's writes; the template files do
 * not change.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import type { Sandbox } from 'e2b';
import { sha256File } from '../../src/images/build.ts';
import type { VmSpec } from '../../src/vmm/driver.ts';
import { waitForHttp } from '../../src/vmm/health.ts';
import { QemuDriver } from '../../src/vmm/qemu/qemu-driver.ts';
import { bootstrapToken, connectE2b } from '../helpers/e2b-stub.ts';
import { ensureDefaultImage } from '../helpers/image.ts';

const MEM = 512;
const TPL_TOKEN = 'template-token-0123456789';

describe('template snapshot and restore (real guests)', { timeout: 600_000 }, () => {
  let root: string;
  let tpl: string;
  let driver: QemuDriver;
  let base: Omit<VmSpec, 'id'>;
  let bgPid = 0;
  before(async () => {
    const img = await ensureDefaultImage();
    root = await mkdtemp('/tmp/kiln-snap-');
    tpl = `${root}/tpl`;
    await mkdir(tpl);
    driver = new QemuDriver({ runDir: `${root}/vms` });
    base = {
      boot: { kernel: img.kernel, initrd: img.initrd, rootfs: img.rootfs },
      resources: { memoryMiB: MEM, vcpus: 1 },
      network: { kind: 'restricted' },
    };
  });
  after(async () => {
    for (const id of await driver.list()) await driver.kill(id);
    await driver.close();
    await rm(root, { recursive: true, force: true });
  });

  it('saves a booted guest: device state, RAM file and frozen disk', async () => {
    const boot = bootstrapToken();
    const info = await driver.start({
      ...base,
      id: 'tpl',
      boot: { ...base.boot, kernelArgs: boot.kernelArgs },
      ramFile: `${tpl}/memory`,
    });
    const url = `http://${info.agent.host}:${info.agent.port}`;
    await waitForHttp(`${url}/health`, { timeoutMs: 180_000 });
    const { sandbox: sbx, close } = await connectE2b(url, { accessToken: TPL_TOKEN }, boot.token);
    await sbx.files.write('/home/user/marker', 'before');
    const h = await sbx.commands.run('sleep 3000', { background: true, timeoutMs: 0 });
    bgPid = h.pid;
    await h.disconnect();
    close();
    const r = await driver.saveState('tpl', `${tpl}/state`);
    assert.equal((await driver.status('tpl')).state, 'paused');
    assert.ok(
      r.bytes > 0 && r.bytes < 8 * 2 ** 20,
      `device state only, RAM stays in its file (${r.bytes} bytes)`,
    );
    assert.ok(r.pauseMs < 10_000);
    await driver.stop('tpl', { keepOverlayAs: `${tpl}/disk.qcow2` });
    assert.equal((await stat(`${tpl}/memory`)).size, MEM * 2 ** 20);
    assert.ok((await stat(`${tpl}/disk.qcow2`)).size > 0);
  });

  it('restores two clones concurrently that keep files and processes and do not see each other', async () => {
    const memBefore = await sha256File(`${tpl}/memory`);
    const diskBefore = (await stat(`${tpl}/disk.qcow2`)).mtimeMs;
    const restore = (id: string): VmSpec => ({
      ...base,
      id,
      diskLayer: `${tpl}/disk.qcow2`,
      restore: { snapshot: { stateFile: `${tpl}/state`, ramFile: `${tpl}/memory` } },
    });
    const [a, b] = await Promise.all([driver.start(restore('clone-a')), driver.start(restore('clone-b'))]);
    const sdks = [];
    for (const [i, vm] of [a, b].entries()) {
      const url = `http://${vm.agent.host}:${vm.agent.port}`;
      await waitForHttp(`${url}/health`, { timeoutMs: 60_000 });
      // /init (with the token the template's agent held) re-syncs the clock and gives each
      // clone its own token.
      sdks.push(await connectE2b(url, { accessToken: `clone-${i}-token` }, TPL_TOKEN));
    }
    const [ca, cb] = sdks.map((s) => s.sandbox) as [Sandbox, Sandbox];
    for (const c of [ca, cb]) {
      assert.equal(await c.files.read('/home/user/marker'), 'before', 'the file written before the save');
      const procs = await c.commands.list();
      assert.ok(
        procs.some((p) => p.pid === bgPid),
        `the background process ${bgPid} runs on: ${procs.map((p) => p.pid).join(',')}`,
      );
      const clock = Number((await c.commands.run('date +%s')).stdout.trim());
      assert.ok(Math.abs(clock * 1000 - Date.now()) < 60_000, 'the clock was re-synced by /init');
    }
    await ca.files.write('/home/user/marker', 'written by a');
    await cb.files.write('/home/user/only-b', 'b');
    assert.equal(await cb.files.read('/home/user/marker'), 'before', "b does not see a's write");
    assert.equal(await ca.files.exists('/home/user/only-b'), false, "a does not see b's file");
    for (const s of sdks) s.close();
    await driver.stop('clone-a');
    await driver.stop('clone-b');
    assert.equal(await sha256File(`${tpl}/memory`), memBefore, 'the template RAM file is unchanged');
    assert.equal((await stat(`${tpl}/disk.qcow2`)).mtimeMs, diskBefore, 'the frozen disk is unchanged');
  });

  it('refuses a restore whose state file or RAM file is missing, before starting anything', async () => {
    const before = await driver.list();
    await assert.rejects(
      driver.start({
        ...base,
        id: 'bad',
        restore: { snapshot: { stateFile: `${tpl}/nope`, ramFile: `${tpl}/memory` } },
      }),
      { code: 'not_found', message: /restore\.snapshot\.stateFile/ },
    );
    await assert.rejects(
      driver.start({
        ...base,
        id: 'bad',
        restore: { snapshot: { stateFile: `${tpl}/state`, ramFile: `${tpl}/no-memory` } },
      }),
      { code: 'not_found', message: /restore\.snapshot\.ramFile/ },
    );
    assert.deepEqual(await driver.list(), before);
  });
});
