import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { downloadShared, publishDebCache, seedDebCache } from './deb-cache.ts';

const root = await mkdtemp(join(tmpdir(), 'kiln-debs-'));
after(() => rm(root, { recursive: true, force: true }));

test('downloadShared: a reader never sees a file being written; the first complete download wins', async () => {
  const shared = join(root, 'a');
  let release = (): void => undefined;
  const gate = new Promise<void>((r) => (release = r));
  const slow = downloadShared(shared, 'p.deb', async (dir) => {
    await writeFile(join(dir, 'p.deb'), 'half');
    await gate; // the download is in progress
    await writeFile(join(dir, 'p.deb'), 'slow-complete');
  });
  await new Promise((r) => setImmediate(r));
  assert.equal(existsSync(join(shared, 'p.deb')), false, 'nothing published before it is complete');
  const fast = await downloadShared(shared, 'p.deb', (dir) => writeFile(join(dir, 'p.deb'), 'complete'));
  release();
  assert.equal(await slow, fast);
  assert.equal(await readFile(fast, 'utf8'), 'complete', 'the later one keeps what was there');
  assert.deepEqual(await readdir(shared), ['p.deb'], 'no private download dir is left');
});

test('downloadShared: a failed download publishes nothing and leaves nothing', async () => {
  const shared = join(root, 'b');
  await assert.rejects(
    downloadShared(shared, 'p.deb', async (dir) => {
      await writeFile(join(dir, 'p.deb'), 'partial');
      throw new Error('network down');
    }),
    /network down/,
  );
  assert.deepEqual(await readdir(shared), []);
});

test('seedDebCache / publishDebCache: a build works on its own links; what it fetched is shared after', async () => {
  const shared = join(root, 'c');
  const own = join(root, 'own-c');
  await downloadShared(shared, 'old.deb', (dir) => writeFile(join(dir, 'old.deb'), 'old'));
  await writeFile(join(shared, 'notes.txt'), 'not a package');
  await seedDebCache(shared, own);
  assert.deepEqual(await readdir(own), ['old.deb']);
  await rm(join(own, 'old.deb')); // debootstrap removes a file it finds invalid: the shared one stays
  await writeFile(join(own, 'new.deb'), 'new');
  await publishDebCache(own, shared);
  assert.deepEqual((await readdir(shared)).sort(), ['new.deb', 'notes.txt', 'old.deb']);
  assert.equal(await readFile(join(shared, 'old.deb'), 'utf8'), 'old');
  assert.equal(await readFile(join(shared, 'new.deb'), 'utf8'), 'new');
});
