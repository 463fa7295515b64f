import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { nullLogger } from '../core/log.ts';
import { publishImage, removeStaleBuilds, workDirFor } from './image-dir.ts';
import { BUILDER_VERSION } from './image-key.ts';
import { readManifest } from './registry.ts';
import { defaultImageSpec } from './spec.ts';

/** A work dir with the files of an image, as the build steps leave it. */
async function assembled(root: string, key: string): Promise<string> {
  const dir = workDirFor(root, key);
  await mkdir(dir);
  for (const f of ['vmlinuz', 'initrd.img', 'rootfs.ext4']) await writeFile(join(dir, f), `${f} of ${key}`);
  return dir;
}

test('two builds of one key publish atomically: one image, no work dir left, both see it complete', async () => {
  const root = await mkdtemp(join(tmpdir(), 'kiln-imgdir-'));
  try {
    const key = 'ab'.repeat(16);
    const [a, b] = [await assembled(root, key), await assembled(root, key)];
    assert.notEqual(a, b, 'each build has its own work dir, even in one process');
    const spec = defaultImageSpec({ name: 'same' });
    const facts = { name: 'same', key, builderVersion: BUILDER_VERSION, spec };
    const kernel = { package: 'linux-image-x', version: '1', release: '6.1' };
    const [ma, mb] = await Promise.all([
      publishImage(root, a, { ...facts, kernel }, { replace: false }),
      publishImage(root, b, { ...facts, kernel }, { replace: false }),
    ]);
    assert.deepEqual(ma.files, mb.files);
    const published = await readManifest(join(root, key));
    assert.deepEqual(published.files, ma.files);
    assert.equal(await readFile(join(root, key, 'rootfs.ext4'), 'utf8'), `rootfs.ext4 of ${key}`);
    assert.deepEqual(
      (await readdir(root)).filter((f) => f.startsWith('.tmp-')),
      [],
      'the loser dropped its work dir',
    );
    assert.deepEqual(JSON.parse(await readFile(join(root, 'by-name', 'same.json'), 'utf8')), {
      name: 'same',
      key,
    });
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test("removeStaleBuilds removes a dead builder's work dir and keeps a live one's", async () => {
  const root = await mkdtemp(join(tmpdir(), 'kiln-imgdir-'));
  try {
    const live = await assembled(root, 'cd'.repeat(16));
    // pid 2^22+1 is above Linux's pid_max limit: no process has it.
    const dead = join(root, `.tmp-${'ef'.repeat(16)}-4194305-0a0b0c0d`);
    await mkdir(dead);
    await removeStaleBuilds(root, nullLogger);
    const left = await readdir(root);
    assert.ok(left.includes(live.slice(root.length + 1)), 'a running build keeps its work dir');
    assert.ok(!left.includes(dead.slice(root.length + 1)), 'an interrupted build is removed');
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
