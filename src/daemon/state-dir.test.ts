import assert from 'node:assert/strict';
import { chmod, chown, lstat, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { KilnError } from '../core/errors.ts';
import { nullLogger } from '../core/log.ts';
import { secureStateDir } from './state-dir.ts';

const mode = async (p: string): Promise<number> => (await lstat(p)).mode & 0o777;

describe('secureStateDir', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'kiln-statedir-'));
  });
  after(() => rm(root, { recursive: true, force: true }));

  it('makes a 0755 state dir 0700 and its files 0600 / dirs 0700, leaving other things alone', async () => {
    const dir = join(root, 'state');
    await mkdir(join(dir, 'vms', 'sbx-1'), { recursive: true });
    await mkdir(join(dir, 'data', 'snapshots', 'snap-1'), { recursive: true });
    await mkdir(join(dir, 'data', 'snapshots', '.staging-export-x'), { recursive: true });
    const files = [
      'kiln.db',
      'kiln.db-wal',
      'e2b-env.key',
      'vms/sbx-1/overlay.qcow2',
      'vms/sbx-1/vm.json',
      'data/snapshots/snap-1/memory',
    ];
    for (const f of files) await writeFile(join(dir, f), 'secret', { mode: 0o644 });
    await writeFile(join(dir, 'data/snapshots/.staging-export-x/vmlinuz'), 'k', { mode: 0o444 });
    await writeFile(join(dir, 'notes.txt'), 'not kiln', { mode: 0o644 });
    await writeFile(join(root, 'outside'), 'x', { mode: 0o644 });
    await symlink(join(root, 'outside'), join(dir, 'vms', 'sbx-1', 'link'));
    for (const d of ['', 'vms', 'vms/sbx-1', 'data', 'data/snapshots', 'data/snapshots/snap-1'])
      await chmod(join(dir, d), 0o755);
    const r = await secureStateDir(dir, nullLogger);
    assert.equal(r.dirWas, '0755');
    assert.equal(await mode(dir), 0o700);
    for (const f of files) assert.equal(await mode(join(dir, f)), 0o600, f);
    for (const d of ['vms', 'vms/sbx-1', 'data', 'data/snapshots', 'data/snapshots/snap-1'])
      assert.equal(await mode(join(dir, d)), 0o700, d);
    assert.equal(await mode(join(dir, 'notes.txt')), 0o644, 'not a file kiln keeps: untouched');
    assert.equal(
      await mode(join(dir, 'data/snapshots/.staging-export-x/vmlinuz')),
      0o444,
      'staging (hard links into the image cache) untouched',
    );
    assert.equal(await mode(join(root, 'outside')), 0o644, 'links are not followed');
    assert.equal(r.fixed.length, files.length + 5);
    // A second start finds nothing to fix.
    assert.deepEqual(await secureStateDir(dir, nullLogger), { dirWas: undefined, fixed: [] });
  });

  it('refuses a state dir that belongs to another user, changing nothing', async () => {
    const dir = join(root, 'foreign');
    await mkdir(dir, { mode: 0o755 });
    await chmod(dir, 0o755);
    await chown(dir, 65534, 65534);
    await assert.rejects(secureStateDir(dir, nullLogger), (e: unknown) => {
      assert.ok(e instanceof KilnError);
      assert.equal(e.code, 'permission_denied');
      assert.match(e.message, /belongs to uid 65534, not to kilnd's uid 0/);
      return true;
    });
    assert.equal(await mode(dir), 0o755);
  });

  it('creates a missing state dir 0700', async () => {
    const dir = join(root, 'new', 'state');
    await secureStateDir(dir, nullLogger);
    assert.equal(await mode(dir), 0o700);
  });
});
