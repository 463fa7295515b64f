/** Git fixtures for the workspace tests (unit and integration). */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Runs git in `cwd` with a test identity (and local submodules allowed); its stdout, trimmed. */
export const git = (cwd: string, ...args: string[]): string =>
  execFileSync(
    'git',
    ['-c', 'user.email=t@kiln', '-c', 'user.name=t', '-c', 'protocol.file.allow=always', ...args],
    { cwd, encoding: 'utf8' },
  ).trim();

/** A clone of `repo` in `dir`/withsub with a submodule at vendor/lib (a repository made in `dir`/lib). */
export function cloneWithSubmodule(dir: string, repo: string): string {
  const lib = join(dir, 'lib');
  mkdirSync(lib);
  git(lib, 'init', '-q');
  writeFileSync(join(lib, 'l.txt'), 'l\n');
  git(lib, 'add', '-A');
  git(lib, 'commit', '-qm', 'lib');
  const withSub = join(dir, 'withsub');
  git(dir, 'clone', '-q', repo, withSub);
  git(withSub, 'submodule', '-q', 'add', lib, 'vendor/lib');
  git(withSub, 'commit', '-qm', 'sub');
  return withSub;
}
