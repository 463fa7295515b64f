/**
 * What `kiln workspace push` learns of a local repository before it sends anything: its root,
 * HEAD, branch, submodules and the files of its working tree (tracked and untracked, not ignored,
 * minus tracked files deleted from the working tree).
 */
import { stat } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { KilnError, invalidArgument } from '../../core/errors.ts';
import { git, gitRaw, nulSplit } from './git.ts';

export interface RepoInfo {
  /** The working tree's top directory. */
  root: string;
  /** The root's base name: the guest path's default (/home/user/<name>). */
  name: string;
  /** HEAD's commit. */
  head: string;
  /** The checked-out branch; null on a detached HEAD. */
  branch: string | null;
  /** Paths of submodules (gitlinks in the index). */
  submodules: string[];
}

/**
 * Inspects the repository that holds `path` (default: the current directory). `invalid_argument`
 * when `path` does not exist, is not inside a git working tree (a plain directory, a bare
 * repository, the inside of `.git`), or the repository has no commit yet.
 */
export async function inspectRepo(path: string): Promise<RepoInfo> {
  const abs = resolve(path);
  const st = await stat(abs).catch(() => undefined);
  if (!st) throw invalidArgument('path', `${abs} does not exist`);
  const dir = st.isDirectory() ? abs : resolve(abs, '..');
  const inside = await gitRaw(dir, ['rev-parse', '--is-inside-work-tree']);
  if (inside.code !== 0 || inside.stdout.toString().trim() !== 'true')
    throw invalidArgument(
      'path',
      inside.code !== 0
        ? `${abs} is not in a git repository: give the path of a repository's working tree (git init first)`
        : `${abs} is outside the repository's working tree (inside .git, or a bare repository): give the working tree's path`,
    );
  const root = await git(dir, ['rev-parse', '--show-toplevel']);
  const headR = await gitRaw(root, ['rev-parse', '--verify', '-q', 'HEAD^{commit}']);
  if (headR.code !== 0)
    throw invalidArgument('path', `the repository at ${root} has no commit yet: commit something first`);
  const b = await gitRaw(root, ['symbolic-ref', '-q', '--short', 'HEAD']);
  const staged = await git(root, ['ls-files', '-s', '-z']);
  const submodules = nulSplit(staged)
    .filter((l) => l.startsWith('160000 '))
    .map((l) => l.slice(l.indexOf('\t') + 1));
  return {
    root,
    name: basename(root),
    head: headR.stdout.toString().trim(),
    branch: b.code === 0 ? b.stdout.toString().trim() : null,
    submodules,
  };
}

/**
 * The working tree's files to send, relative to the root: tracked and untracked-not-ignored,
 * without tracked files deleted from the working tree (so the guest sees them deleted).
 */
export async function workingFiles(root: string): Promise<string[]> {
  const all = nulSplit(await git(root, ['ls-files', '-z', '-c', '-o', '--exclude-standard']));
  const deleted = new Set(nulSplit(await git(root, ['ls-files', '-z', '-d'])));
  return [...new Set(all)].filter((f) => !deleted.has(f));
}

/** Refuses submodules outside full_copy, naming them. */
export function checkSubmodules(info: RepoInfo, mode: string): void {
  if (mode !== 'full_copy' && info.submodules.length > 0)
    throw new KilnError(
      'invalid_argument',
      `the repository has submodules (${info.submodules.join(', ')}); only --mode full_copy sends them`,
      { details: { field: 'mode', submodules: info.submodules } },
    );
}
