/** `kiln run`: a command in a throwaway sandbox (with --workspace: on a pushed repository). */
import { parseArgs } from 'node:util';
import { DEFAULT_TEMPLATE } from '../../core/defaults.ts';
import { validateName } from '../../core/validate.ts';
import type { KilnClient } from '../../sdk/client.ts';
import { UsageError, intArg, pairs, shellJoin, splitCommand } from '../args.ts';
import type { CliContext } from '../context.ts';
import { commandExitCode } from '../output.ts';
import { runInWorkspace, workspaceValue, type RunWorkspace } from './run-workspace.ts';
import { EXPORT_OPTIONS, PUSH_OPTIONS, checkExportTarget, modeArg } from './workspace.ts';

/**
 * Says so when a create is about to build the default template first: the daemon builds it on
 * first use (daemon/ensure-template.ts); this only tells the person why the wait is long.
 */
export async function noteFirstBuild(
  ctx: CliContext,
  c: KilnClient,
  name: string,
  json: boolean,
): Promise<void> {
  if (json || name !== DEFAULT_TEMPLATE) return;
  const { items } = await c.listTemplates();
  if (!items.some((t) => t.name === name && t.ready))
    ctx.say('building the base template (first run only: image build, boot, snapshot)');
}

/** The options of `kiln run`, checked before a daemon is started. */
export function parseRun(argv: string[]): {
  template: string;
  envVars: Record<string, string>;
  timeoutS: number | undefined;
  json: boolean;
  words: string[];
  workspace: RunWorkspace | undefined;
} {
  const [opts, words] = splitCommand(argv);
  const { values } = parseArgs({
    args: workspaceValue(opts),
    options: {
      template: { type: 'string', default: DEFAULT_TEMPLATE },
      timeout: { type: 'string' },
      env: { type: 'string', multiple: true, default: [] },
      json: { type: 'boolean', default: false },
      workspace: { type: 'string' },
      ...PUSH_OPTIONS,
      ...EXPORT_OPTIONS,
    },
  });
  if (words.length === 0)
    throw new UsageError('kiln run needs a command after --, e.g. kiln run -- uname -a');
  validateName('template', values.template);
  const w = values.workspace;
  const wsOnly = ['mode', 'guest-path', 'branch', 'from', 'output'] as const;
  const stray =
    wsOnly.find((k) => values[k] !== undefined) ??
    (values.apply || values['read-only'] ? 'apply/read-only' : undefined);
  if (w === undefined && stray) throw new UsageError(`--${stray} needs --workspace`);
  const target = { output: values.output, apply: values.apply, repo: w ?? '.' };
  if (w !== undefined) checkExportTarget(target);
  return {
    template: values.template,
    envVars: pairs('env', values.env),
    timeoutS: intArg('timeout', values.timeout),
    json: values.json,
    words,
    workspace:
      w === undefined
        ? undefined
        : {
            path: w,
            mode: modeArg(values.mode),
            guestPath: values['guest-path'],
            branch: values.branch,
            from: values.from,
            readOnly: values['read-only'],
            target,
          },
  };
}

export async function run(ctx: CliContext, argv: string[]): Promise<number> {
  const o = parseRun(argv);
  const c = await ctx.connect();
  await noteFirstBuild(ctx, c, o.template, o.json);
  const s = await c.createSandbox({
    template: o.template,
    envVars: o.envVars,
    ...(o.timeoutS === undefined ? {} : { timeoutS: o.timeoutS }),
  });
  try {
    if (o.workspace) return await runInWorkspace(ctx, c, s.sandboxId, shellJoin(o.words), o.workspace);
    const r = await c.exec(s.sandboxId, shellJoin(o.words), {
      onStdout: (b) => process.stdout.write(b),
      onStderr: (b) => process.stderr.write(b),
    });
    return commandExitCode(r);
  } finally {
    await c.killSandbox(s.sandboxId).catch(() => undefined);
  }
}
