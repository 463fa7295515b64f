/** `kiln run`: a command in a throwaway sandbox. */
import { parseArgs } from 'node:util';
import { DEFAULT_TEMPLATE } from '../../core/defaults.ts';
import { validateName } from '../../core/validate.ts';
import type { KilnClient } from '../../sdk/client.ts';
import { UsageError, intArg, pairs, shellJoin, splitCommand } from '../args.ts';
import type { CliContext } from '../context.ts';
import { commandExitCode } from '../output.ts';

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

export async function run(ctx: CliContext, argv: string[]): Promise<number> {
  const [opts, words] = splitCommand(argv);
  const { values } = parseArgs({
    args: opts,
    options: {
      template: { type: 'string', default: DEFAULT_TEMPLATE },
      timeout: { type: 'string' },
      env: { type: 'string', multiple: true, default: [] },
      json: { type: 'boolean', default: false },
    },
  });
  if (words.length === 0)
    throw new UsageError('kiln run needs a command after --, e.g. kiln run -- uname -a');
  validateName('template', values.template);
  const envVars = pairs('env', values.env);
  const timeoutS = intArg('timeout', values.timeout);
  const c = await ctx.connect();
  await noteFirstBuild(ctx, c, values.template, values.json);
  const s = await c.createSandbox({
    template: values.template,
    envVars,
    ...(timeoutS === undefined ? {} : { timeoutS }),
  });
  try {
    const r = await c.exec(s.sandboxId, shellJoin(words), {
      onStdout: (b) => process.stdout.write(b),
      onStderr: (b) => process.stderr.write(b),
    });
    return commandExitCode(r);
  } finally {
    await c.killSandbox(s.sandboxId).catch(() => undefined);
  }
}
