/**
 * The CLI's dispatcher: help first, then one command group per first word. No side effects at
 * import (the process-level wiring, environment reads and exit live in main.ts).
 */
import { UsageError, splitCommand } from './args.ts';
import type { CliContext } from './context.ts';
import { apiKey } from './commands/api-key.ts';
import { daemon } from './commands/daemon.ts';
import { dashboard } from './commands/dashboard.ts';
import { e2b } from './commands/e2b.ts';
import { image } from './commands/image.ts';
import { run } from './commands/run.ts';
import { sandbox } from './commands/sandbox.ts';
import { snapshot } from './commands/snapshot.ts';
import { template } from './commands/template.ts';
import { volume } from './commands/volume.ts';
import { workspace } from './commands/workspace.ts';
import { GROUPS, USAGE, helpFor } from './help.ts';

/**
 * `kiln help [CMD [SUB]]` and `--help`/`-h` anywhere before `--` (after it, the words are the
 * sandboxed command's): prints that command's help. Undefined when help was not asked for.
 */
function help(argv: string[]): number | undefined {
  const [opts] = splitCommand(argv);
  const asked = argv[0] === 'help' || opts.includes('--help') || opts.includes('-h');
  if (!asked) return undefined;
  const words = (argv[0] === 'help' ? opts.slice(1) : opts).filter((w) => !w.startsWith('-'));
  const [cmd, sub] = words;
  // Only the command words count: `kiln sandbox get ID --help` is the help of `sandbox get`.
  const path =
    cmd === undefined ? [] : (GROUPS[cmd]?.length ?? 0) > 0 && sub !== undefined ? [cmd, sub] : [cmd];
  const text = helpFor(cmd === 'daemon' && sub !== 'stop' ? ['daemon'] : path);
  if (text === undefined) throw new UsageError(`unknown command "${path.join(' ')}"`);
  console.log(text);
  return 0;
}

export async function dispatch(ctx: CliContext, argv: string[]): Promise<number> {
  const asked = help(argv);
  if (asked !== undefined) return asked;
  const [cmd, sub, ...rest] = argv;
  switch (cmd) {
    case undefined:
      console.log(USAGE);
      return 0;
    case 'run':
      return run(ctx, argv.slice(1));
    case 'sandbox':
      return sandbox(ctx, sub, rest);
    case 'snapshot':
      return snapshot(ctx, sub, rest);
    case 'template':
      return template(ctx, sub, rest);
    case 'image':
      return image(ctx, sub, rest);
    case 'api-key':
      return apiKey(ctx, sub, rest);
    case 'volume':
      return volume(ctx, sub, rest);
    case 'workspace':
      return workspace(ctx, sub, rest);
    case 'e2b':
      return e2b(ctx, sub);
    case 'dashboard':
      return dashboard(ctx, argv.slice(1));
    case 'daemon':
      return daemon(ctx, argv.slice(1));
    default:
      throw new UsageError(`unknown command "${argv.join(' ')}"`);
  }
}
