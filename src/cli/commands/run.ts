/** `kiln run`: a command in a throwaway sandbox. */
import { parseArgs } from 'node:util';
import { invalidArgument } from '../../core/errors.ts';
import { validateName } from '../../core/validate.ts';
import type { KilnClient } from '../../sdk/client.ts';
import { UsageError, intArg, pairs, shellJoin, splitCommand } from '../args.ts';
import type { CliContext } from '../context.ts';
import { commandExitCode } from '../output.ts';

/** Makes sure the template exists, building `base` on first use (and again after an upgrade). */
export async function ensureTemplate(
  ctx: CliContext,
  c: KilnClient,
  name: string,
  json: boolean,
): Promise<void> {
  const { items } = await c.listTemplates();
  // `ready` is missing from an older daemon's answer: then a snapshot is all it takes.
  if (items.some((t) => t.name === name && t.snapshotId && t.ready !== false)) return;
  if (name !== 'base')
    throw invalidArgument('template', `"${name}" does not exist (kiln template build --name ${name})`);
  if (!json) ctx.say('building the base template (first run only: image build, boot, snapshot)');
  await c.buildTemplate({ name });
}

export async function run(ctx: CliContext, argv: string[]): Promise<number> {
  const [opts, words] = splitCommand(argv);
  const { values } = parseArgs({
    args: opts,
    options: {
      template: { type: 'string', default: 'base' },
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
  await ensureTemplate(ctx, c, values.template, values.json);
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
