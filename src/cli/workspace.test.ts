/**
 * `kiln workspace push|export` and `kiln run --workspace` refusals, run as the real CLI against
 * the native API on the state dir's socket (fake-driver service: nothing reaches a guest). The
 * guest side runs with real guests in test/integration/workspaces.test.ts.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mkdtempSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { cliOnHarness } from '../../test/helpers/cli.ts';
import { parseRun } from './commands/run.ts';
import { workspaceValue } from './commands/run-workspace.ts';

describe('kiln workspace', () => {
  const { kiln, harness } = cliOnHarness('kiln-cli-ws-');
  const dir = mkdtempSync(join(tmpdir(), 'kiln-cli-ws-repo-'));
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const repo = join(dir, 'r');
  mkdirSync(repo);
  execFileSync('git', ['init', '-q'], { cwd: repo });
  writeFileSync(join(repo, 'a'), 'a\n');
  execFileSync('git', ['-c', 'user.email=t@k', '-c', 'user.name=t', 'commit', '-qm', 'a', '--allow-empty'], {
    cwd: repo,
  });

  it('refuses bad input clearly, before anything is sent', async () => {
    const s = await kiln('sandbox', 'create', '--json');
    const sbx = (JSON.parse(s.stdout) as { sandboxId: string }).sandboxId;
    let r = await kiln('workspace', 'push', sbx, repo, '--guest-path', '/home/user/../../etc/x');
    assert.equal(r.status, 2, r.stderr);
    assert.match(
      r.stderr,
      /invalid_argument: guestPath: "\/home\/user\/..\/..\/etc\/x" is outside the sandbox user's home/,
    );
    r = await kiln('workspace', 'push', sbx, repo, '--guest-path', 'rel/path');
    assert.match(r.stderr, /is relative/);
    r = await kiln('workspace', 'push', sbx, repo, '--mode', 'copy');
    assert.equal(r.status, 2);
    assert.match(r.stderr, /"copy" is not one of full_copy, shallow_overlay, metadata_only/);
    r = await kiln('workspace', 'push', sbx, dir);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /is not in a git repository/);
    r = await kiln('workspace', 'push', sbx, join(repo, '.git', 'objects'));
    assert.match(r.stderr, /outside the repository's working tree/);
    r = await kiln('workspace', 'push', 'sbx-nosuch', repo);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /not_found/);
    r = await kiln('workspace', 'export', sbx, '-o', join(dir, 'p'), '--apply');
    assert.equal(r.status, 2);
    assert.match(r.stderr, /either -o FILE or --apply/);
    r = await kiln('workspace', 'export', sbx, '--json');
    assert.match(r.stderr, /--json needs -o FILE or --apply/);
    r = await kiln('workspace', 'export', sbx, '--base', '--evil', '-o', join(dir, 'p'));
    assert.notEqual(r.status, 0);
    await harness().svc.kill(sbx);
    r = await kiln('workspace', 'push', sbx, repo);
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `invalid_state: sandbox ${sbx} is dead \\(killed\\); a workspace push needs a running sandbox`,
      ),
    );
    r = await kiln('workspace', 'export', sbx, '-o', join(dir, 'p'));
    assert.match(r.stderr, /is dead \(killed\); a workspace export needs a running sandbox/);
    r = await kiln('workspace', 'pull', sbx);
    assert.equal(r.status, 2);
  });

  it('kiln run: --workspace takes an optional path; workspace options need it', () => {
    assert.deepEqual(workspaceValue(['--workspace', '--apply']), ['--workspace=.', '--apply']);
    assert.deepEqual(workspaceValue(['--workspace']), ['--workspace=.']);
    assert.deepEqual(workspaceValue(['--workspace', 'src']), ['--workspace', 'src']);
    const o = parseRun(['--workspace', '--mode', 'shallow-overlay', '--apply', '--', 'make']);
    assert.deepEqual(
      o.workspace && { path: o.workspace.path, mode: o.workspace.mode, apply: o.workspace.target.apply },
      {
        path: '.',
        mode: 'shallow_overlay',
        apply: true,
      },
    );
    assert.equal(parseRun(['--', 'true']).workspace, undefined);
    assert.throws(() => parseRun(['--apply', '--', 'true']), /--apply\/read-only needs --workspace/);
    assert.throws(() => parseRun(['--branch', 'x', '--', 'true']), /--branch needs --workspace/);
    assert.throws(
      () => parseRun(['--workspace', '-o', 'f', '--apply', '--', 'true']),
      /either -o FILE or --apply/,
    );
  });
});
