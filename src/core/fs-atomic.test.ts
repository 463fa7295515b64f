import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { writeFileAtomic } from './fs-atomic.ts';

test('writeFileAtomic replaces a file whole; a failed write leaves no temp file behind', async () => {
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
