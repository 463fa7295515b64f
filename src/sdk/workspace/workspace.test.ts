/** The host side of workspaces against real repositories: inspection, the tar per mode, --apply. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { KilnError } from '../../core/errors.ts';
import { applyPatch, conflictingFiles } from './apply.ts';
import { checkSubmodules, inspectRepo } from './repo.ts';
import { workspaceTar } from './tar.ts';
import { cloneWithSubmodule, git } from '../../../test/helpers/git-repo.ts';

const refused = async (p: Promise<unknown>, code: string, re: RegExp): Promise<void> => {
  await assert.rejects(p, (e: unknown) => e instanceof KilnError && e.code === code && re.test(e.message));
};

/** The member names of the tar stream (both archives of shallow_overlay). */
async function members(
  info: Awaited<ReturnType<typeof inspectRepo>>,
  mode: 'full_copy' | 'shallow_overlay' | 'metadata_only',
): Promise<string[]> {
  const t = await workspaceTar(info, mode);
  const file = join(tmpdir(), `kiln-ws-test-${process.pid}-${mode}.tar`);
  writeFileSync(file, Buffer.from(await new Response(t.stream as unknown as ReadableStream).arrayBuffer()));
  const list = execFileSync('tar', ['-t', '-i', '-f', file], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean);
  rmSync(file);
  return list;
}

describe('workspace host side', () => {
  let dir: string;
  let repo: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'kiln-ws-sdk-'));
    repo = join(dir, 'myrepo');
    mkdirSync(join(repo, 'sub'), { recursive: true });
    git(repo, 'init', '-q', '-b', 'main');
    writeFileSync(join(repo, 'a.txt'), 'a\n');
    writeFileSync(join(repo, 'sub/b.txt'), 'b\n');
    writeFileSync(join(repo, 'gone.txt'), 'x\n');
    writeFileSync(join(repo, '.gitignore'), '*.log\n');
    git(repo, 'add', '-A');
    git(repo, 'commit', '-qm', 'one');
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('inspects a repository from any directory of its working tree', async () => {
    const i = await inspectRepo(join(repo, 'sub'));
    assert.equal(i.root, repo);
    assert.equal(i.name, 'myrepo');
    assert.equal(i.branch, 'main');
    assert.match(i.head, /^[0-9a-f]{40}$/);
    assert.deepEqual(i.submodules, []);
  });

  it('refuses a missing path, a plain directory, the inside of .git and a repository without commits', async () => {
    await refused(inspectRepo(join(dir, 'nope')), 'invalid_argument', /does not exist/);
    mkdirSync(join(dir, 'plain'));
    await refused(inspectRepo(join(dir, 'plain')), 'invalid_argument', /not in a git repository/);
    await refused(
      inspectRepo(join(repo, '.git')),
      'invalid_argument',
      /outside the repository's working tree/,
    );
    const empty = join(dir, 'empty');
    mkdirSync(empty);
    git(empty, 'init', '-q');
    await refused(inspectRepo(empty), 'invalid_argument', /no commit yet/);
  });

  it('tars per mode: untracked in, ignored and deleted out, .git or a shallow clone of HEAD', async () => {
    writeFileSync(join(repo, 'new.txt'), 'n\n');
    writeFileSync(join(repo, 'debug.log'), 'ignored\n');
    rmSync(join(repo, 'gone.txt'));
    const info = await inspectRepo(repo);
    const full = await members(info, 'full_copy');
    for (const f of ['a.txt', 'sub/b.txt', 'new.txt', '.gitignore', '.git/HEAD'])
      assert.ok(full.includes(f), f);
    assert.ok(!full.includes('debug.log') && !full.includes('gone.txt'));
    const meta = await members(info, 'metadata_only');
    assert.ok(meta.every((m) => m.startsWith('.git')) && meta.includes('.git/HEAD'));
    const shallow = await members(info, 'shallow_overlay');
    assert.ok(shallow.includes('new.txt') && shallow.includes('.git/shallow'), 'a shallow history');
    git(repo, 'checkout', '-q', 'gone.txt');
    rmSync(join(repo, 'new.txt'));
    rmSync(join(repo, 'debug.log'));
  });

  it('refuses submodules outside full_copy, naming them', async () => {
    const withSub = cloneWithSubmodule(dir, repo);
    const info = await inspectRepo(withSub);
    assert.deepEqual(info.submodules, ['vendor/lib']);
    assert.throws(() => {
      checkSubmodules(info, 'shallow_overlay');
    }, /submodules \(vendor\/lib\); only --mode full_copy/);
    assert.doesNotThrow(() => {
      checkSubmodules(info, 'full_copy');
    });
    assert.ok((await members(info, 'full_copy')).includes('vendor/lib/l.txt'));
  });

  it('--apply: clean, three-way over local changes, and a conflict that changes nothing', async () => {
    const base = git(repo, 'rev-parse', 'HEAD');
    const work = join(dir, 'work');
    git(dir, 'clone', '-q', repo, work);
    writeFileSync(join(work, 'a.txt'), 'a\nmore\n');
    writeFileSync(join(work, 'added.txt'), 'added\n');
    git(work, 'add', '-A');
    const patch = join(dir, 'p1');
    writeFileSync(patch, execFileSync('git', ['diff', '--cached', '--binary', base], { cwd: work }));
    const size = readFileSync(patch).length;
    assert.deepEqual(await applyPatch(repo, patch, 0), { how: 'empty' });
    assert.deepEqual(await applyPatch(repo, patch, size), { how: 'clean' });
    assert.equal(readFileSync(join(repo, 'a.txt'), 'utf8'), 'a\nmore\n');
    git(repo, 'checkout', '-q', 'a.txt');
    rmSync(join(repo, 'added.txt'));
    // A local commit that touches another part of the file: three-way merges it.
    writeFileSync(join(repo, 'a.txt'), 'top\na\n');
    git(repo, 'commit', '-qam', 'local');
    assert.deepEqual(await applyPatch(repo, patch, size), { how: 'three-way' });
    assert.equal(readFileSync(join(repo, 'a.txt'), 'utf8'), 'top\na\nmore\n');
    git(repo, 'reset', '-q', '--hard');
    rmSync(join(repo, 'added.txt'), { force: true });
    // A local change of the same line: a conflict, and nothing changes.
    writeFileSync(join(repo, 'a.txt'), 'top\nA!\n');
    git(repo, 'commit', '-qam', 'clash');
    const before = git(repo, 'status', '--porcelain');
    const idx = readFileSync(join(repo, '.git/index'));
    await refused(
      applyPatch(repo, patch, size),
      'conflict',
      /conflicts with the local repository in a\.txt; nothing was changed/,
    );
    assert.equal(git(repo, 'status', '--porcelain'), before);
    assert.deepEqual(readFileSync(join(repo, '.git/index')), idx);
    assert.equal(readFileSync(join(repo, 'a.txt'), 'utf8'), 'top\nA!\n');
  });

  it('names the files of git apply diagnostics', () => {
    assert.deepEqual(
      conflictingFiles(
        "error: patch failed: x/y.c:12\nerror: x/y.c: patch does not apply\nApplied patch to 'z' with conflicts.\nU w\n",
      ),
      ['w', 'x/y.c', 'z'],
    );
  });
});
