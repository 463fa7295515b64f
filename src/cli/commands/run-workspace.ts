/**
 * `kiln run --workspace [PATH] -- CMD`: the sandbox of `kiln run` gets the repository pushed in
 * first, the command runs in it, and the guest's changes come back as a patch (stdout, -o FILE
 * or --apply) before the sandbox is killed, like banger's `vm run`.
 */
import type { KilnClient } from '../../sdk/client.ts';
import { pushRepo } from '../../sdk/workspace/workspace.ts';
import type { CliContext } from '../context.ts';
import { commandExitCode } from '../output.ts';
import { progress } from '../progress.ts';
import { exportTo, type ExportTarget } from './workspace.ts';
import type { WorkspaceMode } from '../../core/api-types.ts';

/** `--workspace` may stand without a value (the current directory): give it one for parseArgs. */
export function workspaceValue(opts: string[]): string[] {
  return opts.flatMap((o, i) => {
    if (o !== '--workspace') return [o];
    const next = opts[i + 1];
    return next === undefined || next.startsWith('-') ? ['--workspace=.'] : [o];
  });
}

export interface RunWorkspace {
  path: string;
  mode: WorkspaceMode;
  guestPath?: string | undefined;
  branch?: string | undefined;
  from?: string | undefined;
  readOnly: boolean;
  target: ExportTarget;
}

/** Push, run (in the workspace), export; the command's exit code. The caller kills the sandbox. */
export async function runInWorkspace(
  ctx: CliContext,
  c: KilnClient,
  id: string,
  cmd: string,
  w: RunWorkspace,
): Promise<number> {
  const p = progress('pushing');
  const v = await pushRepo(c.socketPath, id, w.path, {
    mode: w.mode,
    guestPath: w.guestPath,
    branch: w.branch,
    from: w.from,
    readOnly: w.readOnly,
    onProgress: p.update,
  }).finally(p.done);
  ctx.say(`pushed ${v.mode} of ${v.base.slice(0, 12)} to ${v.guestPath}`);
  // Without -o or --apply the patch is stdout, so the command's own output goes to stderr.
  const patchOnStdout = w.target.output === undefined && !w.target.apply;
  const r = await c.exec(id, cmd, {
    cwd: v.guestPath,
    onStdout: (b) => (patchOnStdout ? process.stderr : process.stdout).write(b),
    onStderr: (b) => process.stderr.write(b),
  });
  await exportTo(ctx, c.socketPath, id, { guestPath: v.guestPath }, { ...w.target, repo: w.path }, false);
  return commandExitCode(r);
}
