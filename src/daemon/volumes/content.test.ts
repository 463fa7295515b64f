/**
 * The volume content API's operations on a real directory: path confinement (`..`, links in any
 * component, a link as the last component, a descriptor outside the volume) and each operation.
 */
import assert from 'node:assert/strict';
import {
  mkdir,
  mkdtemp,
  open,
  readFile,
  realpath,
  rm,
  stat,
  symlink,
  writeFile,
  readdir,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import * as content from './content.ts';
import { assertFdInside, resolveInVolume, splitVolumePath } from './paths.ts';

let base: string;
let v: content.VolumeRoot;
let outside: string;

before(async () => {
  base = await realpath(await mkdtemp(join(tmpdir(), 'kiln-vol-')));
  await mkdir(join(base, 'vol'));
  outside = join(base, 'outside');
  await mkdir(outside);
  await writeFile(join(outside, 'secret'), 'host secret');
  v = { dir: join(base, 'vol'), owner: { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 } };
  // What a hostile guest could leave in its volume: links out of it.
  await symlink(outside, join(v.dir, 'esc'));
  await symlink(join(outside, 'secret'), join(v.dir, 'secret-link'));
});
after(async () => {
  await rm(base, { recursive: true, force: true });
});

const bytes = (s: string): Readable => Readable.from([Buffer.from(s)]);

describe('paths', () => {
  it('splits and normalises; refuses .., NUL and over-long components', () => {
    assert.deepEqual(splitVolumePath('path', '/a//b/./c/'), ['a', 'b', 'c']);
    assert.deepEqual(splitVolumePath('path', '/'), []);
    assert.throws(() => splitVolumePath('path', 'a/../../etc'), /path: .*leaves the volume/);
    assert.throws(() => splitVolumePath('path', '..'), /leaves the volume/);
    assert.throws(() => splitVolumePath('path', 'a\0b'), /NUL/);
    assert.throws(() => splitVolumePath('path', 'x'.repeat(256)), /too long/);
  });

  it('refuses a link in any component; the last one only when allowed', async () => {
    await assert.rejects(resolveInVolume(v.dir, 'esc/secret'), /symbolic link \("esc"\)/);
    await assert.rejects(resolveInVolume(v.dir, '/secret-link'), /symbolic link/);
    assert.equal((await resolveInVolume(v.dir, 'secret-link', { allowLinkLast: true })).rel, '/secret-link');
    assert.equal((await resolveInVolume(v.dir, 'new/dir/file')).abs, join(v.dir, 'new/dir/file'));
  });

  it('a descriptor outside the volume is refused', async () => {
    const fh = await open(join(outside, 'secret'), 'r');
    try {
      await assert.rejects(assertFdInside(v.dir, fh.fd), /left the volume/);
    } finally {
      await fh.close();
    }
    const inside = await open(v.dir, 'r');
    try {
      await assertFdInside(v.dir, inside.fd);
    } finally {
      await inside.close();
    }
  });
});

describe('content operations', () => {
  it('writes (parents made) and reads back; a failed write leaves no file', async () => {
    const e = await content.writeFileFrom(v, '/d1/d2/f.txt', bytes('hello'), { mode: 0o600 });
    assert.equal(e.path, '/d1/d2/f.txt');
    assert.equal(e.type, 'file');
    assert.equal(e.size, 5);
    assert.equal(e.mode, 0o600);
    const { stream } = await content.readFileStream(v, 'd1/d2/f.txt');
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    assert.equal(Buffer.concat(chunks).toString(), 'hello');
    const broken = new Readable({
      read() {
        this.destroy(new Error('client went away'));
      },
    });
    await assert.rejects(content.writeFileFrom(v, '/d1/broken.txt', broken, {}), /client went away/);
    assert.deepEqual((await readdir(join(v.dir, 'd1'))).sort(), ['d2']);
  });

  it('never writes, reads or changes through a link', async () => {
    await assert.rejects(content.writeFileFrom(v, 'esc/planted', bytes('x'), {}), /symbolic link/);
    await assert.rejects(stat(join(outside, 'planted')), /ENOENT/);
    await assert.rejects(content.readFileStream(v, 'secret-link'), /symbolic link/);
    await assert.rejects(content.updatePath(v, 'secret-link', { mode: 0o777 }), /symbolic link/);
    await assert.rejects(content.makeDir(v, 'esc/sub', {}), /symbolic link/);
    await assert.rejects(content.listDir(v, 'esc'), /symbolic link/);
    assert.equal((await stat(join(outside, 'secret'))).mode & 0o777, 0o644);
  });

  it('stat shows a link as a link; remove removes the link, not its target', async () => {
    const e = await content.statPath(v, 'secret-link');
    assert.equal(e.type, 'symlink');
    assert.equal(e.target, join(outside, 'secret'));
    await symlink(join(outside, 'secret'), join(v.dir, 'rm-link'));
    await content.removePath(v, 'rm-link');
    assert.equal(await readFile(join(outside, 'secret'), 'utf8'), 'host secret');
    await assert.rejects(content.removePath(v, 'rm-link'), /does not exist/);
    await assert.rejects(content.removePath(v, '/'), /volume root/);
  });

  it('lists to a depth; makes directories (existing: already_exists unless force); changes mode', async () => {
    await content.makeDir(v, 'm/n', {});
    await assert.rejects(
      content.makeDir(v, 'm/n', {}),
      (e: Error & { code?: string }) => e.code === 'already_exists',
    );
    assert.equal((await content.makeDir(v, 'm/n', { force: true })).type, 'directory');
    assert.deepEqual(
      (await content.listDir(v, '/m')).map((e) => e.path),
      ['/m/n'],
    );
    await content.writeFileFrom(v, 'm/n/z', bytes('z'), {});
    assert.deepEqual(
      (await content.listDir(v, 'm', 2)).map((e) => e.path),
      ['/m/n', '/m/n/z'],
    );
    assert.equal((await content.updatePath(v, 'm/n/z', { mode: 0o640 })).mode, 0o640);
    await assert.rejects(
      content.statPath(v, 'm/nope'),
      (e: Error & { code?: string }) => e.code === 'not_found',
    );
    await assert.rejects(content.updatePath(v, 'm', { mode: 0o10000 }), /mode/);
  });
});
