import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { writeFileAtomic } from './fs-atomic.ts';

describe('writeFileAtomic', () => {
  it('replaces a file whole; a failed write leaves no temp file behind', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-atomic-'));
    try {
      await writeFileAtomic(join(dir, 'a.json'), 'one');
      await writeFileAtomic(join(dir, 'a.json'), 'two');
      assert.equal(await readFile(join(dir, 'a.json'), 'utf8'), 'two');
      // A directory where the file should go: the rename fails after the temp file was written.
      await mkdir(join(dir, 'b.json'));
      await assert.rejects(writeFileAtomic(join(dir, 'b.json'), 'x'), { code: 'EISDIR' });
      assert.deepEqual((await readdir(dir)).sort(), ['a.json', 'b.json']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('concurrent writers of one file each succeed; one whole content wins; no temp file is left', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-atomic-'));
    try {
      const path = join(dir, 'f');
      const contents = Array.from({ length: 20 }, (_, i) => `content ${i}\n`);
      await Promise.all(contents.map((c) => writeFileAtomic(path, c, 0o600)));
      assert.ok(contents.includes(await readFile(path, 'utf8')));
      assert.deepEqual(await readdir(dir), ['f']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
