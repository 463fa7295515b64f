/**
 * The guest's push and export steps (scripts.ts) run with bash, git and tar on the host against
 * real repositories: the round trip of the issue (binary, rename, deletion, mode change, symlink,
 * staged, unstaged, untracked, ignored) reproduces the tree from a clean checkout of the base,
 * and the repository's index is byte-identical after the export.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { WorkspaceExportHead } from '../../core/api-types.ts';
import { ExportParser } from './export-stream.ts';
import {
  PLACED,
  STAGED,
  exportScript,
  extractScript,
  prepareScript,
  pushScript,
  removeScript,
} from './scripts.ts';

const git = (cwd: string, ...args: string[]): string =>
  execFileSync('git', ['-c', 'user.email=t@kiln', '-c', 'user.name=t', ...args], {
    cwd,
    encoding: 'utf8',
  }).trim();
const bash = (script: string, input?: string): { code: number; out: Buffer; err: string } => {
  const r = spawnSync('bash', ['-c', script], {
    maxBuffer: 1 << 26,
    ...(input ? { input: readFileSync(input) } : {}),
  });
  return { code: r.status ?? 1, out: r.stdout, err: r.stderr.toString() };
};

/** Every file under `dir` but .git: path -> mode + content (or link target). */
function tree(dir: string): Record<string, string> {
  const out = execFileSync(
    'bash',
    [
      '-c',
      `cd "$1" && find . -path ./.git -prune -o \\( -type f -o -type l \\) -printf '%P\\t%y%m\\t%l\\n' | sort`,
      '_',
      dir,
    ],
    { encoding: 'utf8' },
  );
  const t: Record<string, string> = {};
  for (const line of out.trim().split('\n')) {
    const [p = '', kind = '', link = ''] = line.split('\t');
    const exec = kind.startsWith('f') ? (parseInt(kind.slice(1), 8) & 0o100 ? 'x' : '-') : 'l';
    t[p] = `${exec}:${kind.startsWith('l') ? link : readFileSync(join(dir, p)).toString('base64')}`;
  }
  return t;
}

async function exportOf(
  target: string,
  base?: string,
): Promise<{ head: WorkspaceExportHead; patch: Buffer }> {
  const r = bash(exportScript({ target, base }));
  assert.equal(r.code, 0, r.err);
  const chunks: Buffer[] = [];
  let head: WorkspaceExportHead | undefined;
  const p = new ExportParser(
    (h) => {
      head = h;
    },
    (b) => {
      chunks.push(Buffer.from(b));
    },
  );
  // Fed in small pieces, as the guest's stream arrives.
  for (let i = 0; i < r.out.length; i += 7) await p.feed(r.out.subarray(i, i + 7));
  assert.ok(head);
  return { head, patch: Buffer.concat(chunks) };
}

describe('workspace guest scripts (on the host)', () => {
  let dir: string;
  let src: string;
  let base: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'kiln-ws-scripts-'));
    src = join(dir, 'src');
    mkdirSync(src);
    git(src, 'init', '-q', '-b', 'main');
    writeFileSync(join(src, 'keep.txt'), 'keep\n');
    writeFileSync(join(src, 'edit.txt'), 'one\ntwo\n');
    writeFileSync(join(src, 'gone.txt'), 'delete me\n');
    writeFileSync(
      join(src, 'old-name.txt'),
      'a file that is renamed, long enough to be seen as a rename\n'.repeat(5),
    );
    writeFileSync(join(src, 'run.sh'), '#!/bin/sh\necho hi\n');
    writeFileSync(join(src, 'bin.dat'), Buffer.from([0, 1, 2, 3, 255, 0, 7]));
    writeFileSync(join(src, 'staged.txt'), 'before\n');
    writeFileSync(join(src, '.gitignore'), '*.log\n');
    git(src, 'add', '-A');
    git(src, 'commit', '-qm', 'base');
    base = git(src, 'rev-parse', 'HEAD');
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  /** A tar of `src` as a full_copy push sends it (working files and .git), at dir/`name`. */
  const tarOfSrc = (name: string): string => {
    const tar = join(dir, name);
    execFileSync('bash', [
      '-c',
      `cd "$1" && git ls-files -z -co --exclude-standard | tr '\\0' '\\n' | tar -c -f "$2" -T - .git`,
      '_',
      src,
      tar,
    ]);
    return tar;
  };

  it('full_copy: unpacks, checks HEAD, makes the branch; the export round-trips every kind of change', async () => {
    const stage = join(dir, 'stage');
    mkdirSync(stage);
    execFileSync('bash', [
      '-c',
      `cd "$1" && git ls-files -z -co --exclude-standard | tr '\\0' '\\n' | tar -c -f "$2" -T - .git`,
      '_',
      src,
      `${stage}.tar`,
    ]);
    const x = bash(
      extractScript({ stage, mode: 'full_copy', head: base, branch: 'work', pushedAt: 'now' }),
      `${stage}.tar`,
    );
    assert.equal(x.code, 0, x.err);
    assert.deepEqual(x.out.toString().trim().split('\n'), [base, 'work']);
    // Unpacked files have new inodes and ctimes: the copy compares what tar kept (no re-hash).
    assert.deepEqual(
      [git(stage, 'config', 'core.checkStat'), git(stage, 'config', 'core.trustctime')],
      ['minimal', 'false'],
    );
    // The changes an agent might make in the guest.
    const w = stage;
    writeFileSync(join(w, 'bin.dat'), Buffer.from([9, 0, 8, 0, 255]));
    git(w, 'mv', 'old-name.txt', 'new-name.txt');
    unlinkSync(join(w, 'gone.txt'));
    chmodSync(join(w, 'run.sh'), 0o755);
    symlinkSync('keep.txt', join(w, 'link'));
    writeFileSync(join(w, 'staged.txt'), 'after\n');
    git(w, 'add', 'staged.txt');
    writeFileSync(join(w, 'edit.txt'), 'one\nTWO\n');
    writeFileSync(join(w, 'untracked.txt'), 'new\n');
    writeFileSync(join(w, 'debug.log'), 'ignored\n');
    writeFileSync(join(w, 'committed.txt'), 'a guest commit\n');
    git(w, 'add', 'committed.txt');
    git(w, 'commit', '-qm', 'guest commit');
    const indexBefore = readFileSync(join(w, '.git/index'));
    const { head, patch } = await exportOf(w);
    assert.deepEqual(readFileSync(join(w, '.git/index')), indexBefore, 'the index is byte-identical');
    assert.equal(head.base, base);
    assert.equal(head.guestPath, w);
    const byPath = Object.fromEntries(head.files.map((f) => [f.path, f]));
    assert.deepEqual(byPath['new-name.txt'], { status: 'R', from: 'old-name.txt', path: 'new-name.txt' });
    assert.equal(byPath['gone.txt']?.status, 'D');
    assert.equal(byPath['link']?.status, 'A');
    assert.equal(byPath['committed.txt']?.status, 'A');
    assert.equal(byPath['untracked.txt']?.status, 'A');
    assert.equal(byPath['debug.log'], undefined, 'ignored files stay out');
    for (const p of ['bin.dat', 'run.sh', 'staged.txt', 'edit.txt']) assert.equal(byPath[p]?.status, 'M', p);
    // A clean checkout of the base + the patch = the guest's tree (minus the ignored file).
    const clean = join(dir, 'clean');
    git(dir, 'clone', '-q', src, clean);
    git(clean, 'checkout', '-q', base);
    execFileSync('git', ['apply', '--index', '-'], { cwd: clean, input: patch });
    const want = tree(w);
    delete want['debug.log'];
    assert.deepEqual(tree(clean), want);
  });

  it('an export against another base, and one with nothing changed, is an empty patch', async () => {
    const w = join(dir, 'stage');
    const head = git(w, 'rev-parse', 'HEAD');
    git(w, 'add', '-A');
    git(w, 'commit', '-qm', 'all');
    const { head: h, patch } = await exportOf(w, 'HEAD');
    assert.notEqual(h.base, head);
    assert.deepEqual(h.files, []);
    assert.equal(patch.length, 0);
  });

  it('keeps its exit code in a login shell whose ~/.bash_logout trips over set -u (as the agent runs it)', () => {
    const home = join(dir, 'home');
    mkdirSync(home);
    writeFileSync(join(home, '.bash_logout'), 'echo "$UNSET_IN_LOGOUT" >/dev/null\n');
    symlinkSync('/var', join(dir, 'lnk'));
    const r = spawnSync(
      'bash',
      ['-l', '-c', prepareScript(join(dir, 'lnk', 'x'), join(dir, 'lnk', '.kiln-ws-1'))],
      {
        env: { ...process.env, HOME: home },
      },
    );
    assert.equal(r.status, 17, r.stderr.toString());
    assert.match(r.stderr.toString(), /is not a plain directory/);
  });

  it('the push script makes the staging directory, says so, then unpacks its stdin there', () => {
    const stage = join(dir, 'pushed', '.kiln-ws-op-1');
    const tar = tarOfSrc('push.tar');
    const script = pushScript({
      target: join(dir, 'pushed', 'proj'),
      stage,
      mode: 'full_copy',
      head: base,
      pushedAt: 'now',
      placeIfFree: false,
    });
    const x = bash(script, tar);
    assert.equal(x.code, 0, x.err);
    assert.deepEqual(x.out.toString().split('\n'), [STAGED, base, 'main', '']);
    assert.equal(git(stage, 'rev-parse', 'HEAD'), base);
    // A truncated tar: HEAD cannot be checked, the push fails.
    writeFileSync(tar, readFileSync(tar).subarray(0, 20_000));
    const cut = bash(script, tar);
    assert.notEqual(cut.code, 0);
  });

  it('--branch with --from: the base is where the new branch starts, not the pushed HEAD', () => {
    const repo = join(dir, 'from-src');
    git(dir, 'clone', '-q', src, repo);
    writeFileSync(join(repo, 'later.txt'), 'later\n');
    git(repo, 'add', 'later.txt');
    git(repo, 'commit', '-qm', 'later');
    const head = git(repo, 'rev-parse', 'HEAD');
    const stage = join(dir, 'from-stage');
    mkdirSync(stage);
    execFileSync('bash', ['-c', `cd "$1" && tar -c -f "$2" later.txt .git`, '_', repo, `${stage}.tar`]);
    const x = bash(
      extractScript({ stage, mode: 'full_copy', head, branch: 'feat', from: base, pushedAt: 'now' }),
      `${stage}.tar`,
    );
    assert.equal(x.code, 0, x.err);
    assert.deepEqual(x.out.toString().split('\n'), [base, 'feat', '']);
    assert.equal(readFileSync(join(stage, '.git', 'kiln-base'), 'utf8'), `${base}\n`);
    // Detached at the pushed HEAD: no branch line.
    const d = join(dir, 'detached-stage');
    mkdirSync(d);
    git(repo, 'checkout', '-q', '--detach');
    execFileSync('bash', ['-c', `cd "$1" && tar -c -f "$2" later.txt .git`, '_', repo, `${d}.tar`]);
    const y = bash(extractScript({ stage: d, mode: 'full_copy', head, pushedAt: 'now' }), `${d}.tar`);
    assert.equal(y.code, 0, y.err);
    assert.deepEqual(y.out.toString().split('\n'), [head, '', '']);
  });

  it('placeIfFree: a free target gets the tree from the same command; a taken one is left to root', () => {
    const tar = tarOfSrc('place.tar');
    const parent = join(dir, 'placed');
    const target = join(parent, 'proj');
    const last = join(dir, 'last-push');
    const opts = (op: string) => ({
      target,
      stage: join(parent, `.kiln-ws-${op}`),
      mode: 'full_copy' as const,
      head: base,
      pushedAt: 'now',
      placeIfFree: true,
      lastPushFile: last,
    });
    const x = bash(pushScript(opts('op-a')), tar);
    assert.equal(x.code, 0, x.err);
    assert.deepEqual(x.out.toString().split('\n'), [STAGED, base, 'main', PLACED, '']);
    assert.equal(git(target, 'rev-parse', 'HEAD'), base);
    assert.equal(existsSync(opts('op-a').stage), false, 'the staging directory was renamed');
    assert.equal(readFileSync(last, 'utf8'), `${target}\n`);
    // A second push finds the target taken: its tree stays staged, for root to swap in.
    const y = bash(pushScript(opts('op-b')), tar);
    assert.equal(y.code, 0, y.err);
    assert.deepEqual(y.out.toString().split('\n'), [STAGED, base, 'main', '']);
    assert.equal(git(opts('op-b').stage, 'rev-parse', 'HEAD'), base);
    // The undo of push b takes its staging directory, never the target push a placed.
    const b = opts('op-b').stage;
    assert.equal(bash(removeScript([b], { path: target, mark: b })).code, 0);
    assert.deepEqual([existsSync(b), existsSync(target)], [false, true]);
    // The undo of push a takes the tree it placed.
    const a = opts('op-a').stage;
    assert.equal(bash(removeScript([a], { path: target, mark: a })).code, 0);
    assert.equal(existsSync(target), false);
  });

  it('the removal kills what still works in the paths, then removes them', async () => {
    const left = join(dir, 'left', '.kiln-ws-op-2');
    mkdirSync(left, { recursive: true });
    // A push's command still waiting for its input, in its staging directory.
    const waiting = spawn('sleep', ['60'], { cwd: left, stdio: 'ignore' });
    const gone = new Promise((r) => {
      waiting.on('exit', (_code, signal) => {
        r(signal);
      });
    });
    const r = bash(removeScript([left, `${left}.tar`]));
    assert.equal(r.code, 0, r.err);
    assert.equal(await gone, 'SIGKILL');
    assert.equal(existsSync(left), false);
  });

  it('refuses an unknown base and a missing workspace with REFUSED', () => {
    assert.equal(bash(exportScript({ target: join(dir, 'stage'), base: 'nosuchref' })).code, 17);
    assert.equal(bash(exportScript({ target: join(dir, 'nowhere'), base: 'HEAD' })).code, 17);
  });

  it('shallow_overlay and metadata_only make a working repository at HEAD', () => {
    for (const mode of ['shallow_overlay', 'metadata_only'] as const) {
      const stage = join(dir, `stage-${mode}`);
      mkdirSync(stage);
      const bare = join(dir, `bare-${mode}`);
      mkdirSync(bare);
      git(bare, 'clone', '-q', '--bare', '--depth', '1', '--no-local', `file://${src}`, '.git');
      writeFileSync(join(src, 'edit.txt'), 'local change\n');
      const files =
        mode === 'shallow_overlay'
          ? `cd "$1" && git ls-files -z -co --exclude-standard | tr '\\0' '\\n' | tar -c -f - -T -; `
          : '';
      execFileSync('bash', [
        '-c',
        `{ ${files}tar -c -f - -C "$2" .git; } > "$3"`,
        '_',
        src,
        mode === 'shallow_overlay' ? bare : src,
        `${stage}.tar`,
      ]);
      git(src, 'checkout', '-q', 'edit.txt');
      const x = bash(extractScript({ stage, mode, head: base, pushedAt: 'now' }), `${stage}.tar`);
      assert.equal(x.code, 0, `${mode}: ${x.err}`);
      assert.equal(git(stage, 'rev-parse', 'HEAD'), base);
      const status = git(stage, 'status', '--porcelain');
      assert.equal(status, mode === 'shallow_overlay' ? 'M edit.txt' : '', mode);
      assert.equal(readFileSync(join(stage, 'keep.txt'), 'utf8'), 'keep\n');
    }
  });
});
