/**
 * Workspaces end to end with real guests (one kilnd on its own state dir, the CLI and the sdk):
 * the round trip of issue 17 (binary file, rename, deletion, mode change, symlink, staged,
 * unstaged, untracked, ignored, a guest commit: the patch applied to a clean checkout of the
 * base reproduces the guest's tree; the guest's index is byte-identical before and after the
 * export), an export from a restored snapshot, each mode, branch creation, read-only, the
 * submodule refusal, push and export of one sandbox serialised, a conflicting --apply that
 * changes nothing, `kiln run --workspace`, and bad input (nothing half-copied left in the guest).
 * Run under the VM lock: `flock /work/.vm.lock node --test <this file>`.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { KilnClient } from '../../src/sdk/client.ts';
import { exportToFile, pushRepo } from '../../src/sdk/workspace/workspace.ts';
import { kilnSync, removeStateDir, type CliResult } from '../helpers/kilnd.ts';
import { cloneWithSubmodule, git } from '../helpers/git-repo.ts';

/** Every file and link under the current directory but .git: `path kind sha256-or-target`, sorted. */
const LISTING = `find . -path ./.git -prune -o \\( -type f -o -type l \\) -print | sed 's|^\\./||' | LC_ALL=C sort | while IFS= read -r p; do
  if [ -L "$p" ]; then echo "$p link $(readlink "$p")"; else echo "$p $(test -x "$p" && echo x || echo -) $(sha256sum < "$p" | cut -c1-64)"; fi
done`;

describe('workspaces (real guests)', { timeout: 1_500_000 }, () => {
  let state: string;
  let env: NodeJS.ProcessEnv;
  let c: KilnClient;
  let dir: string;
  let repo: string;
  let base: string;
  let sbx: string;
  const kiln = (...args: string[]): CliResult => kilnSync(env, ...args);
  const sh = async (cmd: string, user = 'user'): Promise<{ code: number; out: string; err: string }> => {
    let out = '';
    let err = '';
    const r = await c.exec(sbx, cmd, {
      user,
      onStdout: (b) => (out += b.toString()),
      onStderr: (b) => (err += b.toString()),
    });
    return { code: r.exitCode, out, err };
  };
  const ok = async (cmd: string, user = 'user'): Promise<string> => {
    const r = await sh(cmd, user);
    assert.equal(r.code, 0, `${cmd}: ${r.err}`);
    return r.out;
  };
  /** Nothing of a failed or refused push is left beside the workspaces. */
  const noLeftovers = async (): Promise<void> => {
    assert.equal(await ok('ls -a /home/user | grep -c "^\\.kiln-ws-" || true'), '0\n');
  };

  before(async () => {
    state = await mkdtemp('/tmp/kiln-ws-it-');
    env = { ...process.env, KILN_STATE_DIR: state, KILN_E2B_API_PORT: '0', KILN_E2B_SANDBOX_PORT: '0' };
    c = new KilnClient({ socketPath: `${state}/kilnd.sock` });
    dir = join(state, 'host');
    repo = join(dir, 'proj');
    mkdirSync(repo, { recursive: true });
    git(repo, 'init', '-q', '-b', 'main');
    writeFileSync(join(repo, 'keep.txt'), 'keep\n');
    writeFileSync(join(repo, 'edit.txt'), 'one\ntwo\nthree\n');
    writeFileSync(join(repo, 'gone.txt'), 'delete me\n');
    writeFileSync(join(repo, 'old-name.txt'), 'a file that will be renamed in the guest\n'.repeat(8));
    writeFileSync(join(repo, 'run.sh'), '#!/bin/sh\necho hi\n');
    writeFileSync(join(repo, 'bin.dat'), randomBytes(4096));
    writeFileSync(join(repo, 'staged.txt'), 'before\n');
    writeFileSync(join(repo, '.gitignore'), '*.log\n');
    symlinkSync('keep.txt', join(repo, 'old-link'));
    git(repo, 'add', '-A');
    git(repo, 'commit', '-qm', 'base');
    base = git(repo, 'rev-parse', 'HEAD');
    // The first create starts kilnd and builds the base template.
    const r = kiln('sandbox', 'create', '--json');
    assert.equal(r.status, 0, r.stderr);
    sbx = (JSON.parse(r.stdout) as { sandboxId: string }).sandboxId;
  });
  after(() => removeStateDir(env, state));

  it('full_copy round trip: the patch on a clean checkout of the base is the guest tree; the index is untouched', async () => {
    const r = kiln('workspace', 'push', sbx, repo, '--branch', 'work', '--json');
    assert.equal(r.status, 0, r.stderr);
    const v = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.deepEqual(
      {
        mode: v['mode'],
        base: v['base'],
        branch: v['branch'],
        guestPath: v['guestPath'],
        readOnly: v['readOnly'],
      },
      { mode: 'full_copy', base, branch: 'work', guestPath: '/home/user/proj', readOnly: false },
    );
    const ev = (await c.logs(sbx)).items.find((e) => e.message.startsWith('workspace pushed'));
    assert.ok(ev, 'the push is in the sandbox events');
    assert.equal(
      await ok('cd ~/proj && git branch --show-current && stat -c %U .git/index keep.txt'),
      'work\nuser\nuser\n',
    );
    // What an agent does in the guest.
    await ok(`cd ~/proj && set -e
      head -c 3000 /dev/urandom > bin.dat
      git mv old-name.txt new-name.txt
      rm gone.txt
      chmod +x edit.txt
      ln -s run.sh new-link && rm old-link
      echo committed > committed.txt && git add committed.txt && git -c user.name=g -c user.email=g@g commit -qm 'guest commit'
      echo after > staged.txt && git add staged.txt
      printf 'one\\nTWO\\nthree\\n' > edit.txt
      echo new > untracked.txt
      echo noise > debug.log`);
    const indexBefore = await ok('sha256sum < ~/proj/.git/index');
    const patch = join(dir, 'round.patch');
    const e = kiln('workspace', 'export', sbx, '-o', patch, '--json');
    assert.equal(e.status, 0, e.stderr);
    assert.equal(await ok('sha256sum < ~/proj/.git/index'), indexBefore, 'the guest index is byte-identical');
    const head = JSON.parse(e.stdout) as {
      base: string;
      files: { status: string; path: string; from?: string }[];
    };
    assert.equal(head.base, base);
    const st = Object.fromEntries(head.files.map((f) => [f.path, f.status]));
    assert.deepEqual(st, {
      'bin.dat': 'M',
      'committed.txt': 'A',
      'edit.txt': 'M',
      'gone.txt': 'D',
      'new-link': 'A',
      'new-name.txt': 'R',
      'old-link': 'D',
      'staged.txt': 'M',
      'untracked.txt': 'A',
    });
    const clean = join(dir, 'clean');
    git(dir, 'clone', '-q', repo, clean);
    git(clean, 'checkout', '-q', base);
    execFileSync('git', ['apply', '--index', patch], { cwd: clean });
    const hostTree = execFileSync('bash', ['-c', LISTING], { cwd: clean, encoding: 'utf8' });
    const guestTree = await ok(`cd ~/proj && rm debug.log && { ${LISTING}; } && echo noise > debug.log`);
    assert.equal(hostTree, guestTree);
    // A sandbox restored from a snapshot exports the same patch (its last push is in the guest).
    const snap = await c.snapshot(sbx);
    const restored = await c.restoreSnapshot(snap.snapshotId);
    const again = join(dir, 'restored.patch');
    await exportToFile(c.socketPath, restored.sandboxId, {}, again);
    assert.deepEqual(readFileSync(again), readFileSync(patch));
    await c.killSandbox(restored.sandboxId);
    await c.deleteSnapshot(snap.snapshotId);
  });

  it('shallow_overlay, metadata_only, read-only, and the submodule refusal', async () => {
    writeFileSync(join(repo, 'edit.txt'), 'local change\n');
    const s = kiln(
      'workspace',
      'push',
      sbx,
      repo,
      '--mode',
      'shallow_overlay',
      '--guest-path',
      '/home/user/w/shallow',
    );
    assert.equal(s.status, 0, s.stderr);
    assert.equal(
      await ok('cd ~/w/shallow && git rev-parse HEAD --is-shallow-repository && git status --porcelain'),
      `${base}\ntrue\n M edit.txt\n`,
    );
    const m = kiln(
      'workspace',
      'push',
      sbx,
      repo,
      '--mode',
      'metadata_only',
      '--guest-path',
      '/home/user/w/meta',
    );
    assert.equal(m.status, 0, m.stderr);
    assert.equal(
      await ok('cd ~/w/meta && git rev-parse HEAD && git status --porcelain && cat edit.txt'),
      `${base}\none\ntwo\nthree\n`,
    );
    git(repo, 'checkout', '-q', 'edit.txt');
    const ro = kiln(
      'workspace',
      'push',
      sbx,
      repo,
      '--read-only',
      '--guest-path',
      '/home/user/w/ro',
      '--json',
    );
    assert.equal(ro.status, 0, ro.stderr);
    assert.equal((JSON.parse(ro.stdout) as { readOnly: boolean }).readOnly, true);
    assert.notEqual((await sh('touch ~/w/ro/x')).code, 0, 'unwritable to the sandbox user');
    assert.notEqual((await sh('echo y >> ~/w/ro/keep.txt')).code, 0);
    const roExport = kiln(
      'workspace',
      'export',
      sbx,
      '--guest-path',
      '/home/user/w/ro',
      '-o',
      join(dir, 'ro.patch'),
      '--json',
    );
    assert.equal(roExport.status, 0, roExport.stderr);
    assert.deepEqual((JSON.parse(roExport.stdout) as { files: unknown[] }).files, []);
    // Submodules: only full_copy.
    const withSub = cloneWithSubmodule(dir, repo);
    const refused = kiln('workspace', 'push', sbx, withSub, '--mode', 'shallow_overlay');
    assert.equal(refused.status, 2, refused.stderr);
    assert.match(refused.stderr, /submodules \(vendor\/lib\); only --mode full_copy/);
    assert.equal((await sh('test -e ~/withsub')).code, 1);
    const full = kiln('workspace', 'push', sbx, withSub);
    assert.equal(full.status, 0, full.stderr);
    assert.equal(await ok('cd ~/withsub/vendor/lib && cat l.txt && git status --porcelain'), 'l\n');
    await noLeftovers();
  });

  it('push and export of one sandbox are serialised', async () => {
    const big = join(dir, 'big');
    mkdirSync(big);
    git(big, 'init', '-q');
    writeFileSync(join(big, 'blob.bin'), randomBytes(8 << 20));
    git(big, 'add', '-A');
    git(big, 'commit', '-qm', 'big');
    const t0 = Date.now();
    let pushEnd = 0;
    let exportEnd = 0;
    const push = pushRepo(c.socketPath, sbx, big).then(() => (pushEnd = Date.now()));
    await new Promise((r) => setTimeout(r, 200));
    const exp = exportToFile(
      c.socketPath,
      sbx,
      { guestPath: '/home/user/proj' },
      join(dir, 'during.patch'),
    ).then(() => (exportEnd = Date.now()));
    // Other operations are not held by the workspace lock.
    const info = await c.getSandbox(sbx);
    const infoAt = Date.now();
    assert.equal(info.state, 'running');
    await Promise.all([push, exp]);
    assert.ok(
      exportEnd >= pushEnd,
      `the export (${exportEnd - t0} ms) waited for the push (${pushEnd - t0} ms)`,
    );
    assert.ok(infoAt < pushEnd, 'reading the sandbox did not wait for the push');
    assert.equal(await ok('cd ~/big && git status --porcelain && stat -c %s blob.bin'), `${8 << 20}\n`);
  });

  it('a conflicting --apply changes nothing and names the file; a clean one applies', () => {
    const local = join(dir, 'local');
    git(dir, 'clone', '-q', repo, local);
    writeFileSync(join(local, 'edit.txt'), 'one\nLOCAL\nthree\n');
    git(local, 'commit', '-qam', 'local edit');
    const statusBefore = git(local, 'status', '--porcelain');
    const headBefore = git(local, 'rev-parse', 'HEAD');
    const r = kiln('workspace', 'export', sbx, '--guest-path', '/home/user/proj', '--apply', '--repo', local);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /conflict.*edit\.txt.*nothing was changed/);
    assert.equal(git(local, 'status', '--porcelain'), statusBefore);
    assert.equal(git(local, 'rev-parse', 'HEAD'), headBefore);
    assert.equal(readFileSync(join(local, 'edit.txt'), 'utf8'), 'one\nLOCAL\nthree\n');
    const fresh = join(dir, 'fresh');
    git(dir, 'clone', '-q', repo, fresh);
    const a = kiln('workspace', 'export', sbx, '--guest-path', '/home/user/proj', '--apply', '--repo', fresh);
    assert.equal(a.status, 0, a.stderr);
    assert.equal(readFileSync(join(fresh, 'untracked.txt'), 'utf8'), 'new\n');
    assert.match(a.stderr, /file\(s\) changed since/);
  });

  it('kiln run --workspace: create, push, run in it, export, kill', async () => {
    const before = (await c.listSandboxes({ states: ['running'] })).items.length;
    const out = join(dir, 'run.patch');
    const r = kiln('run', '--workspace', repo, '-o', out, '--', 'sh', '-c', 'pwd; echo made > made.txt');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, '/home/user/proj\n');
    assert.match(readFileSync(out, 'utf8'), /made\.txt/);
    assert.equal(
      (await c.listSandboxes({ states: ['running'] })).items.length,
      before,
      'the sandbox is gone',
    );
  });

  it('bad input: not a repository, a path outside it, an escaping guest path, a failing step, a dead sandbox', async () => {
    const plain = join(dir, 'plain');
    mkdirSync(plain);
    let r = kiln('workspace', 'push', sbx, plain);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /not in a git repository/);
    r = kiln('workspace', 'push', sbx, join(repo, '.git'));
    assert.equal(r.status, 2);
    assert.match(r.stderr, /outside the repository's working tree/);
    r = kiln('workspace', 'push', sbx, repo, '--guest-path', '/home/user/../../etc/evil');
    assert.equal(r.status, 2);
    assert.match(r.stderr, /outside the sandbox user's home/);
    r = kiln('workspace', 'push', sbx, repo, '--mode', 'bogus');
    assert.equal(r.status, 2);
    // A parent that is a symbolic link out of the home is refused in the guest.
    await ok('ln -sfn /tmp ~/outside');
    r = kiln('workspace', 'push', sbx, repo, '--guest-path', '/home/user/outside/x');
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /not a plain directory/);
    assert.equal((await sh('test -e /tmp/x')).code, 1);
    // A push that fails after the upload (a branch from a ref that does not exist) leaves nothing.
    r = kiln(
      'workspace',
      'push',
      sbx,
      repo,
      '--guest-path',
      '/home/user/half',
      '--branch',
      'b',
      '--from',
      'nosuchref',
    );
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /nosuchref/);
    assert.equal((await sh('test -e ~/half')).code, 1);
    await noLeftovers();
    await c.killSandbox(sbx);
    assert.equal((await c.getSandbox(sbx)).state, 'dead');
    r = kiln('workspace', 'push', sbx, repo);
    assert.equal(r.status, 1, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stderr, /is dead.*needs a running sandbox/);
    r = kiln('workspace', 'export', sbx, '-o', join(dir, 'x.patch'));
    assert.match(r.stderr, /is dead/);
    await rm(join(dir, 'x.patch'), { force: true });
  });
});
