/**
 * QemuDiskLayers against the real qemu-img: a flattened layer keeps what every layer between it
 * and its new base held, not only its own clusters (a three-layer chain written with qemu-io,
 * read back through the flattened layer).
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { run } from '../../core/exec.ts';
import { QemuDiskLayers } from './disk-layers.ts';

const io = (image: string, cmd: string) => run('qemu-io', ['-f', 'qcow2', '-c', cmd, image]);

describe('QemuDiskLayers.flatten (real qemu-img)', () => {
  let dir = '';
  const at = (name: string) => join(dir, name);
  const layers = () => new QemuDiskLayers({ runDir: dir });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-flatten-'));
    const disks = layers();
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', at('base'), '4M']);
    await io(at('base'), 'write -P 0x11 0 1M');
    await disks.createOverlay({ path: at('base'), format: 'qcow2' }, at('l1'));
    await io(at('l1'), 'write -P 0xaa 1M 64k');
    await disks.createOverlay({ path: at('l1'), format: 'qcow2' }, at('l2'));
    await io(at('l2'), 'write -P 0xbb 2M 64k');
    // The top layer overwrites part of the base and part of l1.
    await disks.createOverlay({ path: at('l2'), format: 'qcow2' }, at('l3'));
    await io(at('l3'), 'write -P 0xcc 0 64k');
    await io(at('l3'), 'write -P 0xdd 1M 4k');
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('writes the layers in between into the new layer over the base', async () => {
    await layers().flatten(at('l3'), at('base'), at('flat'));
    assert.equal(await layers().backingOf(at('flat')), at('base'));
    // Each read fails (qemu-io: "Pattern verification failed") if the content differs.
    for (const [pattern, off, len] of [
      ['0xcc', 0, 65536],
      ['0x11', 65536, 1048576 - 65536],
      ['0xdd', 1048576, 4096],
      ['0xaa', 1048576 + 4096, 65536 - 4096],
      ['0xbb', 2097152, 65536],
      ['0', 3 * 1048576, 1048576],
    ] as const) {
      const r = await io(at('flat'), `read -P ${pattern} ${off} ${len}`);
      assert.doesNotMatch(r.stdout + r.stderr, /verification failed/i, `${pattern} at ${off}`);
    }
    // The source layer is untouched and the copy needs none of the layers in between.
    assert.equal(await layers().backingOf(at('l3')), at('l2'));
    await rm(at('l1'));
    await rm(at('l2'));
    const r = await io(at('flat'), 'read -P 0xaa 1052672 61440');
    assert.doesNotMatch(r.stdout + r.stderr, /verification failed/i);
  });

  it('refuses to overwrite an existing output', async () => {
    await assert.rejects(layers().flatten(at('l3'), at('base'), at('flat')), /EEXIST/);
  });
});

describe('QemuDiskLayers.createOverlay (real qemu-img)', () => {
  let dir = '';
  const at = (name: string) => join(dir, name);
  // qemu-img behind a wrapper that counts its runs.
  const runs = async () => (await readFile(at('runs'), 'utf8').catch(() => '')).length;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-overlays-'));
    await writeFile(at('qemu-img'), `#!/bin/sh\nprintf x >> ${at('runs')}\nexec qemu-img "$@"\n`, {
      mode: 0o755,
    });
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', at('base'), '4M']);
    await io(at('base'), 'write -P 0x11 0 1M');
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('runs qemu-img once per backing and writes the same overlay from its bytes after', async () => {
    const disks = new QemuDiskLayers({ runDir: dir, qemuImgBinary: at('qemu-img') });
    await disks.createOverlay({ path: at('base'), format: 'qcow2' }, at('o1'));
    await disks.createOverlay({ path: at('base'), format: 'qcow2' }, at('o2'));
    await disks.createOverlay({ path: at('base'), format: 'qcow2' }, at('o3'));
    assert.equal(await runs(), 1);
    // Byte for byte what qemu-img makes (holes read as the zeros it wrote).
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', at('base'), '-F', 'qcow2', at('fresh')]);
    assert.deepEqual(await readFile(at('o2')), await readFile(at('fresh')));
    await run('qemu-img', ['check', '-q', at('o2')]);
    // Each is its own overlay: a write to one shows in it alone, the backing through both.
    await io(at('o2'), 'write -P 0x22 0 64k');
    for (const [image, pattern, len] of [
      ['o2', '0x22', '64k'],
      ['o3', '0x11', '1M'],
    ] as const) {
      const r = await io(at(image), `read -P ${pattern} 0 ${len}`);
      assert.doesNotMatch(r.stdout + r.stderr, /verification failed/i, image);
    }
    await run('qemu-img', ['check', '-q', at('o2')]);
  });

  it('runs qemu-img again for a backing that changed, and a missing one fails as before', async () => {
    const disks = new QemuDiskLayers({ runDir: dir, qemuImgBinary: at('qemu-img') });
    await writeFile(at('runs'), '');
    await disks.createOverlay({ path: at('base'), format: 'qcow2' }, at('p1'));
    await run('qemu-img', ['resize', '-q', at('base'), '8M']);
    await disks.createOverlay({ path: at('base'), format: 'qcow2' }, at('p2'));
    assert.equal(await runs(), 2);
    assert.equal(disks.virtualSize(at('p2')), 8 * 1024 * 1024);
    assert.equal(disks.virtualSize(at('p1')), 4 * 1024 * 1024);
    await assert.rejects(
      disks.createOverlay({ path: at('nothing'), format: 'qcow2' }, at('p3')),
      (e: Error) => e.message.includes('nothing'),
    );
  });
});
