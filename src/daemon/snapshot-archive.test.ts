import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { KilnError } from '../core/errors.ts';
import {
  ARCHIVE_FILES,
  MANIFEST,
  artifact,
  packArchive,
  unpackArchive,
  type ArchiveManifest,
} from './snapshot-archive.ts';
import { stageArchive } from './testing/fixtures.ts';

const refused = (p: Promise<unknown>, re: RegExp): Promise<void> =>
  assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof KilnError, String(e));
    assert.equal(e.code, 'invalid_argument');
    assert.match(e.message, re);
    return true;
  });

describe('snapshot archives', () => {
  let root: string;
  let src: string;
  let good: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'kiln-archive-'));
    src = join(root, 'src');
    await mkdir(src);
    // The memory file is large enough that writing it applies backpressure while the archive is read.
    await stageArchive(src, { name: 'n', guestToken: 't', imageKey: 'k' }, (kind) =>
      kind === 'memory' ? randomBytes(24 * 2 ** 20) : `${kind} `.repeat(5000),
    );
    good = join(root, 'good.tar');
    const chunks: Buffer[] = [];
    for await (const c of packArchive(src)) chunks.push(c as Buffer);
    await writeFile(good, Buffer.concat(chunks));
  });
  after(() => rm(root, { recursive: true, force: true }));

  const fresh = async (): Promise<string> => mkdtemp(join(root, 'out-'));

  it('round-trips: every file back with the manifest verified', async () => {
    const out = await fresh();
    const m = await unpackArchive(createReadStream(good), out);
    assert.equal(m.snapshot.id, 'snap-1');
    assert.deepEqual((await readdir(out)).sort(), [MANIFEST, ...Object.values(ARCHIVE_FILES)].sort());
    // What is on disk is what was packed, byte for byte.
    for (const f of m.files) assert.deepEqual(await artifact(out, f.kind, f.path), f);
  });

  it('refuses an entry outside the snapshot (path traversal) and names it', async () => {
    const evil = join(root, 'evil.tar');
    execFileSync('tar', [
      '-cf',
      evil,
      '-C',
      src,
      '--transform',
      's,^memory$,../../etc/evil,',
      MANIFEST,
      'memory',
    ]);
    const out = await fresh();
    await refused(
      unpackArchive(createReadStream(evil), out),
      /"\.\.\/\.\.\/etc\/evil" is not part of a kiln snapshot/,
    );
    assert.deepEqual(await readdir(join(root, '..')).then((l) => l.includes('evil')), false);
  });

  /** The good archive's files with the manifest's file list changed by `edit`. */
  const withManifest = async (edit: (m: ArchiveManifest) => void): Promise<Readable> => {
    const dir = await mkdtemp(join(root, 'man-'));
    execFileSync('cp', ['-r', `${src}/.`, dir]);
    const m = JSON.parse(await readFile(join(dir, MANIFEST), 'utf8')) as ArchiveManifest;
    edit(m);
    await writeFile(join(dir, MANIFEST), JSON.stringify(m));
    const chunks: Buffer[] = [];
    for await (const c of packArchive(dir)) chunks.push(c as Buffer);
    return Readable.from([Buffer.concat(chunks)]);
  };
  const disk = (m: ArchiveManifest): ArchiveManifest['files'][number] => {
    const d = m.files.find((f) => f.kind === 'disk');
    assert.ok(d);
    return d;
  };

  it('refuses a manifest listing extra artifacts: traversal, absolute, unknown kind, duplicate kind', async () => {
    const cases: [string, (m: ArchiveManifest) => void, RegExp][] = [
      [
        'extra traversal',
        (m) => m.files.push({ ...disk(m), path: '../../../../etc/shadow' }),
        /the manifest lists the disk file twice/,
      ],
      [
        'traversal in place of a file',
        (m) => (disk(m).path = '../../../../etc/shadow'),
        /disk file path "\.\.\/\.\.\/\.\.\/\.\.\/etc\/shadow" leaves the snapshot/,
      ],
      ['absolute path', (m) => (disk(m).path = '/etc/shadow'), /"\/etc\/shadow" leaves the snapshot/],
      ['other name', (m) => (disk(m).path = 'memory'), /disk file must be "disk\.qcow2", not "memory"/],
      [
        'unknown kind',
        (m) => m.files.push({ ...disk(m), kind: 'shadow' as 'disk', path: '../../etc/shadow' }),
        /has kind "shadow", not one of memory, state, disk, kernel, initrd/,
      ],
      ['missing file', (m) => m.files.pop(), /lists 4 files; a snapshot has exactly 5/],
      ['not an object', (m) => (m.files as unknown[]).push('x'), /manifest file 5 is not an object/],
      ['bad hash', (m) => (disk(m).sha256 = 'zz'), /disk file has no valid SHA-256/],
    ];
    for (const [what, edit, re] of cases) {
      const out = await fresh();
      await refused(unpackArchive(await withManifest(edit), out), re).catch((e: unknown) => {
        throw new Error(`${what}: ${String(e)}`);
      });
    }
  });

  it('keeps only the known fields of each listed file', async () => {
    const m = await unpackArchive(
      await withManifest((x) => Object.assign(disk(x), { extra: '../../etc/shadow' })),
      await fresh(),
    );
    assert.deepEqual(Object.keys(disk(m)).sort(), ['kind', 'path', 'sha256', 'size']);
  });

  it('refuses links and directories', async () => {
    const dir = join(root, 'withlink');
    await mkdir(dir);
    execFileSync('ln', ['-s', '/etc/passwd', join(dir, 'memory')]);
    const t = join(root, 'link.tar');
    execFileSync('tar', ['-cf', t, '-C', dir, 'memory']);
    await refused(unpackArchive(createReadStream(t), await fresh()), /"memory" is a SymbolicLink/);
  });

  it('refuses a truncated archive', async () => {
    const t = join(root, 'trunc.tar');
    execFileSync('cp', [good, t]);
    await truncate(t, 20_000);
    await refused(unpackArchive(createReadStream(t), await fresh()), /truncated/);
  });

  it('refuses a corrupted file (SHA-256 mismatch) and a missing manifest', async () => {
    const dir = join(root, 'bad');
    await mkdir(dir);
    execFileSync('cp', ['-r', `${src}/.`, dir]);
    await writeFile(join(dir, 'state'), 'state '.repeat(4999) + 'XXXXX ');
    const chunks: Buffer[] = [];
    for await (const c of packArchive(dir)) chunks.push(c as Buffer);
    await refused(
      unpackArchive(Readable.from([Buffer.concat(chunks)]), await fresh()),
      /state does not match its SHA-256/,
    );
    const noManifest = join(root, 'nomanifest.tar');
    execFileSync('tar', ['-cf', noManifest, '-C', src, 'memory']);
    await refused(unpackArchive(createReadStream(noManifest), await fresh()), /no kiln-snapshot\.json/);
    await refused(
      unpackArchive(Readable.from([Buffer.from('not a tar at all')]), await fresh()),
      /not a valid/,
    );
  });
});
