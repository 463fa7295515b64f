/** `kiln dashboard [--link] [--open] [--json]`. */
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { UsageError } from '../args.ts';
import type { CliContext } from '../context.ts';

/** Tries the desktop's opener (xdg-open, else sensible-browser); false when none could start. */
function openInBrowser(url: string): Promise<boolean> {
  const tryOne = (cmd: string): Promise<boolean> =>
    new Promise((resolve) => {
      const child = spawn(cmd, [url], { stdio: 'ignore', detached: true });
      child.once('error', () => {
        resolve(false);
      });
      child.once('spawn', () => {
        child.unref();
        resolve(true);
      });
    });
  return tryOne('xdg-open').then((ok) => ok || tryOne('sensible-browser'));
}

export async function dashboard(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      link: { type: 'boolean', default: false },
      open: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
  });
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0] ?? ''}"`);
  const c = await ctx.connect();
  const d = await c.dashboard(values.link);
  if (values.json) console.log(JSON.stringify(d, null, 2));
  else console.log(d.url);
  if (values.link && !values.json)
    ctx.say(`a one-time sign-in link, good until ${d.expiresAt ?? '?'}; otherwise sign in with an API key`);
  if (values.open && !(await openInBrowser(d.url)))
    ctx.say('no browser opener (xdg-open) found: open the URL above yourself');
  return 0;
}
