/**
 * The sdk's workspace operations: push a local repository into a sandbox and export the guest's
 * changes as a patch (to a stream, a file, or applied to the local repository).
 */
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { WorkspaceExportHead, WorkspaceMode, WorkspaceView } from '../../core/api-types.ts';
import { workspacePath } from '../../core/workspace-path.ts';
import { applyPatch, type ApplyResult } from './apply.ts';
import { checkSubmodules, inspectRepo } from './repo.ts';
import { workspaceTar } from './tar.ts';
import { postWorkspace, postWorkspaceExport, type ExportQuery } from './transport.ts';

export { inspectRepo, type RepoInfo } from './repo.ts';
export { applyPatch, conflictingFiles, type ApplyResult } from './apply.ts';

export interface PushRepoOpts {
  mode?: WorkspaceMode;
  guestPath?: string | undefined;
  branch?: string | undefined;
  from?: string | undefined;
  readOnly?: boolean | undefined;
  onProgress?: (bytes: number) => void;
}

/**
 * Pushes the repository at `path` into sandbox `id`. `invalid_argument` (before anything is sent)
 * for a path that is not in a repository's working tree, a repository without commits, or
 * submodules outside full_copy.
 */
export async function pushRepo(
  socketPath: string,
  id: string,
  path: string,
  o: PushRepoOpts = {},
): Promise<WorkspaceView> {
  const mode = o.mode ?? 'full_copy';
  const info = await inspectRepo(path);
  checkSubmodules(info, mode);
  // The guest path is checked before anything is sent (kilnd checks it again).
  workspacePath(o.guestPath, info.name);
  const tar = await workspaceTar(info, mode);
  try {
    return await postWorkspace(
      socketPath,
      id,
      tar.stream,
      {
        mode,
        head: info.head,
        name: info.name,
        guestPath: o.guestPath,
        branch: o.branch,
        from: o.from,
        readOnly: o.readOnly,
      },
      o.onProgress,
    );
  } finally {
    tar.stream.destroy();
    await tar.cleanup();
  }
}

/** Streams the workspace's patch into `out` (which is ended); resolves with the head. */
export async function exportPatch(
  socketPath: string,
  id: string,
  q: ExportQuery,
  out: Writable,
  onProgress?: (bytes: number) => void,
): Promise<WorkspaceExportHead> {
  const head = await postWorkspaceExport(socketPath, id, q, out, onProgress);
  out.end();
  await finished(out);
  return head;
}

/** Exports into a file (created or replaced; removed again when the export fails). */
export async function exportToFile(
  socketPath: string,
  id: string,
  q: ExportQuery,
  file: string,
  onProgress?: (bytes: number) => void,
): Promise<WorkspaceExportHead> {
  const out = createWriteStream(file);
  try {
    return await exportPatch(socketPath, id, q, out, onProgress);
  } catch (e) {
    // No half-written patch that looks like a result.
    out.destroy();
    await rm(file, { force: true });
    throw e;
  }
}

/**
 * Exports and applies the patch to the local repository at `repoPath` (see apply.ts): on a
 * conflict nothing is changed and the `conflict` error names the files.
 */
export async function exportAndApply(
  socketPath: string,
  id: string,
  q: ExportQuery,
  repoPath: string,
  onProgress?: (bytes: number) => void,
): Promise<{ head: WorkspaceExportHead; applied: ApplyResult }> {
  const info = await inspectRepo(repoPath);
  const dir = await mkdtemp(join(tmpdir(), 'kiln-export-'));
  try {
    const file = join(dir, 'patch');
    const head = await exportToFile(socketPath, id, q, file, onProgress);
    const applied = await applyPatch(info.root, file, (await stat(file)).size);
    return { head, applied };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
