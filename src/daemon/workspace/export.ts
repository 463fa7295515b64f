/**
 * `kiln workspace export`: the binary patch of everything that changed in a sandbox's workspace
 * since its base (commits made in the guest, staged, unstaged and untracked-not-ignored files),
 * streamed from the guest to the caller as git writes it. Read-only in the guest: the script
 * (scripts.ts `exportScript`) works on a temporary index and object directory.
 */
import type { WorkspaceExportHead } from '../../core/api-types.ts';
import { KilnError } from '../../core/errors.ts';
import { guestOf } from '../sandbox/agent.ts';
import type { ServiceContext } from '../sandbox/context.ts';
import type { OpCtx } from '../sandbox/types.ts';
import { ExportParser } from './export-stream.ts';
import { WORKSPACE_USER, workspacePath } from '../../core/workspace-path.ts';
import { runningSandbox, stepFailed } from './push.ts';
import { exportScript } from './scripts.ts';

export interface ExportOpts {
  guestPath?: string | undefined;
  base?: string | undefined;
  signal?: AbortSignal | undefined;
}

export interface ExportSink {
  /** The guest path, base and changed files: called once, before any patch bytes. */
  head: (h: WorkspaceExportHead) => void | Promise<void>;
  /** A piece of the patch; a returned promise holds the guest's stream (backpressure). */
  patch: (b: Uint8Array) => void | Promise<void>;
}

/** Checks the export's options before the sandbox is looked at. */
export function checkExportOpts(o: ExportOpts): ExportOpts {
  if (o.base !== undefined && !/^[0-9A-Za-z][\w./^~-]{0,254}$/.test(o.base))
    throw new KilnError('invalid_argument', `base "${o.base}" is not a commit name`, {
      details: { field: 'base' },
    });
  return { ...o, guestPath: o.guestPath ? workspacePath(o.guestPath, undefined) : undefined };
}

export async function exportWorkspace(
  sc: ServiceContext,
  id: string,
  opts: ExportOpts,
  sink: ExportSink,
  ctx: OpCtx,
): Promise<WorkspaceExportHead> {
  const o = checkExportOpts(opts);
  runningSandbox(sc, id, 'a workspace export');
  const g = await guestOf(sc, id, ctx);
  const parser = new ExportParser(sink.head, sink.patch);
  const r = await g.exec(exportScript({ target: o.guestPath, base: o.base }), {
    user: WORKSPACE_USER,
    keepOutput: false,
    onStdout: (b) => parser.feed(b),
    ...(o.signal ? { signal: o.signal } : {}),
  });
  if (r.exitCode !== 0) throw stepFailed('the workspace export', r);
  const head = parser.head();
  if (!head) throw new KilnError('guest_agent_error', 'the workspace export ended before its header');
  return head;
}
