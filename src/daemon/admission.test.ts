import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { diskVirtualSize, overlayWorstCaseBytes } from '../vmm/qemu/qcow2.ts';
import { QemuDiskLayers } from '../vmm/qemu/disk-layers.ts';
import { DiskAdmission } from './admission.ts';

const MiB = 2 ** 20;

describe('disk admission', () => {
  let dir: string;
  let layer: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-adm-'));
    layer = join(dir, 'disk.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', layer, '64M']);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A VM directory whose overlay over `layer` has `writeMiB` written by the guest. */
  const vm = (id: string, writeMiB: number): void => {
    mkdirSync(join(dir, 'vms', id), { recursive: true });
    const overlay = join(dir, 'vms', id, 'overlay.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', layer, '-F', 'qcow2', overlay]);
    if (writeMiB > 0)
      execFileSync('qemu-io', ['-c', `write -P 7 0 ${writeMiB}M`, overlay], { stdio: 'ignore' });
  };

  it('a disk size is its virtual size; a full overlay stays within the worst case', () => {
    assert.equal(diskVirtualSize(layer), 64 * MiB);
    vm('full', 64);
    const used = statSync(join(dir, 'vms', 'full', 'overlay.qcow2')).blocks * 512;
    assert.ok(used > 64 * MiB, `the guest filled it: ${used}`);
    assert.ok(used <= overlayWorstCaseBytes(64 * MiB), `${used} <= ${overlayWorstCaseBytes(64 * MiB)}`);
  });

  it('admits while free space covers the new disk + what running sandboxes may still write + the reserve', () => {
    let free = 0;
    const adm = new DiskAdmission({
      stateDir: dir,
      layers: new QemuDiskLayers({ runDir: join(dir, 'vms') }),
      reserveMiB: 100,
      overcommitRatio: 1,
      freeBytes: () => free,
    });
    const worst = overlayWorstCaseBytes(64 * MiB);
    vm('a', 0);
    vm('b', 40);
    const usedB = statSync(join(dir, 'vms', 'b', 'overlay.qcow2')).blocks * 512;
    const live = [
      { id: 'a', layer },
      { id: 'b', layer },
      { id: 'c-creating', layer }, // no VM directory yet: its whole worst case counts
    ];
    const need =
      worst +
      (worst - statSync(join(dir, 'vms', 'a', 'overlay.qcow2')).blocks * 512) +
      (worst - usedB) +
      worst +
      100 * MiB;
    free = need;
    adm.admit(layer, live);
    free = need - 1;
    assert.throws(
      () => {
        adm.admit(layer, live);
      },
      (e: { code?: string; message?: string; status?: number }) => {
        assert.equal(e.code, 'no_space');
        assert.equal(e.status, 507);
        assert.match(
          e.message ?? '',
          /not enough free disk space for a new sandbox: \d+ MiB free in .*, \d+ MiB needed \(its 66 MiB disk \+ \d+ MiB that 3 live sandboxes may still write, \+ 100 MiB reserve\); free disk space/,
        );
        return true;
      },
    );
    // Without the sandbox that was being created (it ended), it fits.
    adm.admit(layer, live.slice(0, 2));
  });

  it('an overcommit ratio divides what sandboxes may write, not the reserve', () => {
    const worst = overlayWorstCaseBytes(64 * MiB);
    const adm = new DiskAdmission({
      stateDir: dir,
      layers: new QemuDiskLayers({ runDir: join(dir, 'vms') }),
      reserveMiB: 10,
      overcommitRatio: 4,
      freeBytes: () => worst / 4 + 10 * MiB,
    });
    adm.admit(layer, []);
    assert.throws(() => {
      adm.admit(layer, [{ id: 'x', layer }]);
    }, /divided by the overcommit ratio 4/);
  });

  it('refuses nonsense settings', () => {
    const o = {
      stateDir: dir,
      layers: new QemuDiskLayers({ runDir: dir }),
      reserveMiB: 0,
      overcommitRatio: 1,
    };
    assert.throws(() => new DiskAdmission({ ...o, overcommitRatio: 0.5 }), { code: 'invalid_argument' });
    assert.throws(() => new DiskAdmission({ ...o, reserveMiB: -1 }), { code: 'invalid_argument' });
    // The real statfs of the state dir: a sane number.
    assert.doesNotThrow(() => {
      new DiskAdmission({ ...o, stateDir: dir }).admit(layer, []);
    });
  });
});
