import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { metadataFromHeaders, readMetadata, writeMetadata } from './xattrs.ts';

describe('file metadata headers (envd rules)', () => {
  it('strips X-Metadata-, keeps the first of a repeated header, ignores other headers', () => {
    assert.deepEqual(
      metadataFromHeaders({
        'x-metadata-owner': ['alice', 'bob'],
        'x-metadata-': ['no key'],
        'content-type': ['text/plain'],
      }),
      { owner: 'alice' },
    );
  });
  it('refuses what envd refuses, naming the key', () => {
    assert.throws(
      () => metadataFromHeaders({ 'x-metadata-k': ['caf\u00e9'] }),
      /key "k".*printable US-ASCII/,
    );
    assert.throws(
      () => metadataFromHeaders({ [`x-metadata-${'k'.repeat(247)}`]: ['v'] }),
      /exceeds 246 bytes/,
    );
    assert.throws(() => metadataFromHeaders({ 'x-metadata-k': ['v'.repeat(4096)] }), /total metadata size/);
  });
});

describe('file metadata as user.e2b.* xattrs (the python helper)', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-xattr-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('writes, replaces and reads back metadata; files without any or missing read as undefined', async () => {
    const f = join(dir, 'f');
    const g = join(dir, 'g');
    await writeFile(f, 'x');
    await writeFile(g, 'y');
    await writeMetadata(f, { a: '1', b: '2' });
    assert.deepEqual(await readMetadata([f, g, join(dir, 'missing')]), [
      { a: '1', b: '2' },
      undefined,
      undefined,
    ]);
    await writeMetadata(f, { c: '3' });
    assert.deepEqual(await readMetadata([f]), [{ c: '3' }]);
    await assert.rejects(writeMetadata(join(dir, 'missing'), { a: '1' }), { code: 'ENOENT' });
  });
});
