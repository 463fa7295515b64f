import assert from 'node:assert/strict';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import zlib from 'node:zlib';
import { applyLayer, cleanEntryPath, resolveInRoot } from './layer.ts';
import type { Compression } from './manifest.ts';
import { digestOf, makeTar, type TarEntry } from './testing/tar-fixture.ts';

let base: string;
let n = 0;
before(async () => {
  base = await mkdtemp(join(tmpdir(), 'kiln-layer-'));
});
after(async () => {
  await rm(base, { recursive: true, force: true });
});

/** A fresh root and, next to it, an "outside" directory a hostile layer tries to reach. */
function fresh(): { root: string; outside: string } {
  const dir = join(base, String(n++));
  mkdirSync(join(dir, 'root'), { recursive: true });
  mkdirSync(join(dir, 'outside'));
  writeFileSync(join(dir, 'outside', 'victim'), 'host data');
  return { root: join(dir, 'root'), outside: join(dir, 'outside') };
}

async function apply(root: string, entries: TarEntry[], compression: Compression = 'none', diffId?: string) {
  const tar = makeTar(entries);
  const blob =
    compression === 'gzip' ? zlib.gzipSync(tar) : compression === 'zstd' ? zlib.zstdCompressSync(tar) : tar;
  return applyLayer(root, Readable.from([blob]), { compression, diffId: diffId ?? digestOf(tar) });
}

describe('applyLayer', () => {
  it('applies whiteouts and opaque directories from a later layer, keeping what that layer adds', async () => {
    const { root } = fresh();
    await apply(root, [
      { path: 'a/', type: 'dir' },
      { path: 'a/x', content: 'x' },
      { path: 'a/y', content: 'y' },
      { path: 'b/', type: 'dir' },
      { path: 'b/z', content: 'z' },
      { path: 'b/sub/', type: 'dir' },
      { path: 'b/sub/old', content: 'old' },
      { path: 'c/', type: 'dir' },
      { path: 'c/lower', content: 'lower' },
    ]);
    const s = await apply(root, [
      { path: 'a/.wh.x' },
      { path: 'b/.wh..wh..opq' },
      { path: 'b/new', content: 'new' },
      // the marker may come after the layer's own entries: they stay
      { path: 'c/mine', content: 'mine' },
      { path: 'c/.wh..wh..opq' },
    ]);
    assert.equal(s.whiteouts, 3);
    assert.equal(existsSync(join(root, 'a/x')), false);
    assert.equal(readFileSync(join(root, 'a/y'), 'utf8'), 'y');
    assert.equal(existsSync(join(root, 'b/z')), false);
    assert.equal(existsSync(join(root, 'b/sub')), false);
    assert.equal(readFileSync(join(root, 'b/new'), 'utf8'), 'new');
    assert.equal(existsSync(join(root, 'c/lower')), false);
    assert.equal(readFileSync(join(root, 'c/mine'), 'utf8'), 'mine');
    assert.equal(existsSync(join(root, 'a/.wh.x')), false, 'whiteout markers are not files in the result');
  });

  it('keeps modes (setuid too), owners, symlinks and hard links; gzip and zstd layers', async () => {
    const { root } = fresh();
    await apply(
      root,
      [
        { path: 'bin/', type: 'dir' },
        { path: 'bin/tool', content: '#!/bin/sh\n', mode: 0o4755, uid: 1234, gid: 2345 },
        { path: 'bin/alias', type: 'symlink', linkpath: 'tool' },
        { path: 'bin/hard', type: 'hardlink', linkpath: 'bin/tool' },
      ],
      'gzip',
    );
    const st = statSync(join(root, 'bin/tool'));
    assert.equal(st.mode & 0o7777, 0o4755);
    assert.equal(st.uid, 1234);
    assert.equal(st.gid, 2345);
    assert.equal(readlinkSync(join(root, 'bin/alias')), 'tool');
    assert.equal(statSync(join(root, 'bin/hard')).ino, st.ino);
    await apply(root, [{ path: 'etc/zst', content: 'zstd layer' }], 'zstd');
    assert.equal(readFileSync(join(root, 'etc/zst'), 'utf8'), 'zstd layer');
  });

  it('refuses entries that climb out with ".."', async () => {
    const { root, outside } = fresh();
    await assert.rejects(apply(root, [{ path: '../outside/evil', content: 'x' }]), /climbs out of the root/);
    await assert.rejects(apply(root, [{ path: 'a/../../outside/evil', content: 'x' }]), /climbs out/);
    await assert.rejects(
      apply(root, [{ path: 'h', type: 'hardlink', linkpath: '../outside/victim' }]),
      /climbs out/,
    );
    assert.equal(existsSync(join(outside, 'evil')), false);
  });

  it('writes through symlinked parents inside the root only (relative and absolute links)', async () => {
    const { root, outside } = fresh();
    await apply(root, [
      { path: 'rel', type: 'symlink', linkpath: '../outside' },
      { path: 'abs', type: 'symlink', linkpath: outside },
      { path: 'rel/pwned', content: 'a' },
      { path: 'abs/pwned', content: 'b' },
    ]);
    assert.equal(existsSync(join(outside, 'pwned')), false);
    assert.equal(readFileSync(join(root, 'outside/pwned'), 'utf8'), 'a');
    assert.equal(readFileSync(join(root, outside, 'pwned'), 'utf8'), 'b');
  });

  it('never writes through, removes through or hard-links through a symlink to the host', async () => {
    const { root, outside } = fresh();
    const victim = join(outside, 'victim');
    await apply(root, [
      { path: 'f', type: 'symlink', linkpath: victim },
      { path: 'd', type: 'symlink', linkpath: outside },
    ]);
    // A file over a symlink replaces the link; it does not write to its target.
    await apply(root, [{ path: 'f', content: 'overwritten?' }]);
    assert.equal(lstatSync(join(root, 'f')).isFile(), true);
    assert.equal(readFileSync(victim, 'utf8'), 'host data');
    // A whiteout under a symlinked dir removes inside the root (nothing there), not the host file.
    await apply(root, [{ path: 'd/.wh.victim' }, { path: 'd/.wh..wh..opq' }]);
    assert.equal(readFileSync(victim, 'utf8'), 'host data');
    // A hard link whose source resolves through the symlink: missing inside the root, refused.
    await assert.rejects(apply(root, [{ path: 'h', type: 'hardlink', linkpath: 'd/victim' }]), /missing/);
    assert.equal(statSync(victim).nlink, 1);
  });

  it('refuses a layer whose content does not hash to its diff id', async () => {
    const { root } = fresh();
    await assert.rejects(
      apply(root, [{ path: 'x', content: 'x' }], 'gzip', digestOf('something else')),
      /unpacks to sha256:[0-9a-f]{64}, the config says/,
    );
  });

  it('skips FIFOs and devices, naming them', async () => {
    const { root } = fresh();
    const s = await apply(root, [{ path: 'p', type: 'fifo' }]);
    assert.deepEqual(s.skipped, ['p (FIFO)']);
  });
});

describe('path helpers', () => {
  it('cleanEntryPath strips ./ and leading /, refuses .. and NUL', () => {
    assert.equal(cleanEntryPath('./a/b/'), 'a/b');
    assert.equal(cleanEntryPath('/etc/passwd'), 'etc/passwd');
    assert.throws(() => cleanEntryPath('a/../b'), /climbs out/);
    assert.throws(() => cleanEntryPath('a\0b'), /NUL/);
  });

  it('resolveInRoot follows symlink chains but stops at the root, and refuses loops', () => {
    const { root } = fresh();
    mkdirSync(join(root, 'usr/bin'), { recursive: true });
    symlinkSync('usr/bin', join(root, 'bin'));
    symlinkSync('../../../../..', join(root, 'usr/up'));
    symlinkSync('loop2', join(root, 'loop1'));
    symlinkSync('loop1', join(root, 'loop2'));
    assert.equal(resolveInRoot(root, 'bin/sh'), join(root, 'usr/bin/sh'));
    assert.equal(resolveInRoot(root, 'usr/up/etc', true), join(root, 'etc'));
    assert.equal(resolveInRoot(root, 'bin', false), join(root, 'bin'));
    assert.throws(() => resolveInRoot(root, 'loop1/x'), /too many levels of symlinks/);
  });
});
