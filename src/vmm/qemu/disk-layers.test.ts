/**
 * QemuDiskLayers against the real qemu-img: a flattened layer keeps what every layer between it
 * and its new base held, not only its own clusters (a three-layer chain written with qemu-io,
 * read back through the flattened layer).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
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
