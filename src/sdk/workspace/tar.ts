/**
 * The tar stream `kiln workspace push` sends, per mode, made by the host's tar as it is read
 * (nothing is held in memory):
 * - full_copy: the working tree's files (tracked and untracked, not ignored) and `.git`;
 * - shallow_overlay: the same files, then a shallow bare clone of HEAD as `.git` (two archives
 *   back to back: the guest extracts with --ignore-zeros);
 * - metadata_only: `.git` alone (the guest checks HEAD out).
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import type { WorkspaceMode } from '../../core/api-types.ts';
import { KilnError } from '../../core/errors.ts';
import { git } from './git.ts';
import { workingFiles, type RepoInfo } from './repo.ts';

export interface WorkspaceTar {
  stream: Readable;
  /** Removes the temporary clone (shallow_overlay); safe to call twice. */
  cleanup: () => Promise<void>;
}

/** One `tar -c` of `names` (NUL-separated on its stdin) under `dir`, into `out` (left open). */
function tarInto(dir: string, names: string[], out: PassThrough): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('tar', ['-c', '-f', '-', '-C', dir, '--null', '-T', '-'], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (err = (err + c).slice(-8192)));
    child.on('error', (e: NodeJS.ErrnoException) => {
      reject(e.code === 'ENOENT' ? new KilnError('missing_tool', 'tar is not installed on this host') : e);
    });
    child.stdout.pipe(out, { end: false });
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(new KilnError('internal', `tar of ${dir} failed: ${err.trim() || `exit ${code}`}`));
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(names.map((n) => `${n}\0`).join(''));
  });
}

async function gitDirIsDir(root: string): Promise<void> {
  const st = await stat(join(root, '.git')).catch(() => undefined);
  if (!st?.isDirectory())
    throw new KilnError(
      'invalid_argument',
      `${root}/.git is not a directory (a linked worktree or a submodule's checkout): push it with --mode shallow_overlay`,
      { details: { field: 'mode' } },
    );
}

/** Starts the tar stream of `info`'s repository in `mode`. */
export async function workspaceTar(info: RepoInfo, mode: WorkspaceMode): Promise<WorkspaceTar> {
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  let tmp: string | undefined;
  const cleanup = async (): Promise<void> => {
    if (tmp) await rm(tmp, { recursive: true, force: true });
    tmp = undefined;
  };
  const parts: (() => Promise<void>)[] = [];
  if (mode === 'full_copy') {
    await gitDirIsDir(info.root);
    const files = await workingFiles(info.root);
    parts.push(() => tarInto(info.root, [...files, '.git'], out));
  } else if (mode === 'metadata_only') {
    await gitDirIsDir(info.root);
    parts.push(() => tarInto(info.root, ['.git'], out));
  } else {
    const files = await workingFiles(info.root);
    tmp = await mkdtemp(join(tmpdir(), 'kiln-ws-'));
    await git(tmp, ['clone', '-q', '--bare', '--depth', '1', '--no-local', `file://${info.root}`, '.git'], {
      what: 'a shallow clone of HEAD',
    });
    const dir = tmp;
    parts.push(() => tarInto(info.root, files, out));
    parts.push(() => tarInto(dir, ['.git'], out));
  }
  void (async () => {
    try {
      for (const p of parts) await p();
      out.end();
    } catch (e) {
      out.destroy(e as Error);
    } finally {
      await cleanup();
    }
  })();
  return { stream: out, cleanup };
}
