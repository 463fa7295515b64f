/** `kiln daemon [--detach]` and `kiln daemon stop`. */
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import type { CliContext } from '../context.ts';
import { KILND_MAIN, socketPathOf, startDetached, stopDaemon } from '../daemon-control.ts';
import { childExitCode } from '../output.ts';

export async function daemon(ctx: CliContext, argv: string[]): Promise<number> {
  if (argv[0] === 'stop') {
    const stopped = await stopDaemon(ctx.stateDir);
    ctx.say(stopped ? 'kilnd stopped' : 'no kilnd was running');
    return 0;
  }
  const { values } = parseArgs({ args: argv, options: { detach: { type: 'boolean', default: false } } });
  if (values.detach) {
    await startDetached(ctx.stateDir, ctx.say);
    ctx.say(`kilnd is up on ${socketPathOf(ctx.stateDir)}`);
    return 0;
  }
  const child = spawn(process.execPath, [KILND_MAIN], { stdio: 'inherit', env: ctx.env });
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.removeAllListeners(sig);
    process.on(sig, () => child.kill(sig));
  }
  return new Promise((r) =>
    child.on('exit', (code, signal) => {
      r(childExitCode(code, signal));
    }),
  );
}
