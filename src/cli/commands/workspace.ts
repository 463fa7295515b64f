/** `kiln workspace push|export`: a local repository into a sandbox, the guest's changes back as a patch. */
import { parseArgs } from 'node:util';
import { WORKSPACE_MODES, type WorkspaceExportHead, type WorkspaceMode } from '../../core/api-types.ts';
import { invalidArgument } from '../../core/errors.ts';
import { exportAndApply, exportPatch, exportToFile, pushRepo } from '../../sdk/workspace/workspace.ts';
import { UsageError } from '../args.ts';
import type { CliContext } from '../context.ts';
import { progress } from '../progress.ts';

/** `--mode`'s value, checked. */
export function modeArg(v: string | undefined): WorkspaceMode {
  const m = (v ?? 'full_copy').replace(/-/g, '_');
  if (!(WORKSPACE_MODES as readonly string[]).includes(m))
    throw invalidArgument('mode', `"${v ?? ''}" is not one of ${WORKSPACE_MODES.join(', ')}`);
  return m as WorkspaceMode;
}

export const PUSH_OPTIONS = {
  mode: { type: 'string' },
  'guest-path': { type: 'string' },
  branch: { type: 'string' },
  from: { type: 'string' },
  'read-only': { type: 'boolean', default: false },
} as const;

export const EXPORT_OPTIONS = {
  output: { type: 'string', short: 'o' },
  apply: { type: 'boolean', default: false },
} as const;

/** The patch's destination: a file, applied to `repo`, or stdout. */
export interface ExportTarget {
  output?: string | undefined;
  apply: boolean;
  repo: string;
}

export function checkExportTarget(t: ExportTarget): void {
  if (t.output !== undefined && t.apply) throw new UsageError('give either -o FILE or --apply, not both');
}

/** Exports to the target; says what changed on stderr (or nothing with --json). */
export async function exportTo(
  ctx: CliContext,
  socketPath: string,
  id: string,
  q: { guestPath?: string | undefined; base?: string | undefined },
  t: ExportTarget,
  json: boolean,
): Promise<unknown> {
  const p = progress('exporting');
  let head: WorkspaceExportHead;
  let result: Record<string, unknown>;
  try {
    if (t.apply) {
      const r = await exportAndApply(socketPath, id, q, t.repo, p.update);
      head = r.head;
      result = { ...head, applied: r.applied.how };
    } else if (t.output !== undefined) {
      head = await exportToFile(socketPath, id, q, t.output, p.update);
      result = { ...head, output: t.output };
    } else {
      head = await exportPatch(socketPath, id, q, process.stdout, p.update);
      result = { ...head };
    }
  } finally {
    p.done();
  }
  if (!json) {
    const where = t.apply
      ? ` (applied to ${t.repo})`
      : t.output !== undefined
        ? ` (patch in ${t.output})`
        : '';
    ctx.say(`${head.files.length} file(s) changed since ${head.base.slice(0, 12)}${where}`);
    for (const f of head.files) ctx.say(`  ${f.status} ${f.from ? `${f.from} -> ` : ''}${f.path}`);
  }
  return result;
}

export async function workspace(ctx: CliContext, sub: string | undefined, argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      ...PUSH_OPTIONS,
      ...EXPORT_OPTIONS,
      base: { type: 'string' },
      repo: { type: 'string', default: '.' },
      json: { type: 'boolean', default: false },
    },
  });
  const id = positionals[0];
  if (sub !== 'push' && sub !== 'export')
    throw new UsageError(`unknown command "kiln workspace ${sub ?? ''}"`);
  if (!id) throw new UsageError(`kiln workspace ${sub} needs a sandbox id (kiln sandbox list)`);
  if (sub === 'push') {
    const mode = modeArg(values.mode);
    const c = await ctx.connect();
    const p = progress('pushing');
    const v = await pushRepo(c.socketPath, id, positionals[1] ?? '.', {
      mode,
      guestPath: values['guest-path'],
      branch: values.branch,
      from: values.from,
      readOnly: values['read-only'],
      onProgress: p.update,
    }).finally(p.done);
    if (values.json) console.log(JSON.stringify(v, null, 2));
    else
      ctx.say(
        `pushed ${v.mode} of ${v.base.slice(0, 12)} to ${v.guestPath}${v.branch ? ` on branch ${v.branch}` : ''}${v.readOnly ? ' (read-only)' : ''}`,
      );
    return 0;
  }
  const t = { output: values.output, apply: values.apply, repo: values.repo };
  checkExportTarget(t);
  if (values.json && t.output === undefined && !t.apply)
    throw new UsageError('--json needs -o FILE or --apply (without them the patch goes to stdout)');
  const c = await ctx.connect();
  const r = await exportTo(
    ctx,
    c.socketPath,
    id,
    { guestPath: values['guest-path'], base: values.base },
    t,
    values.json,
  );
  if (values.json) console.log(JSON.stringify(r, null, 2));
  return 0;
}
