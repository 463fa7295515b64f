/**
 * The `kiln` command line. Run it from a checkout as `./kiln ...` (which sets the machine up on
 * first use). Everything but `image build` goes through the daemon's API (the sdk), starting the
 * daemon when none runs. Tables for people, `--json` for programs.
 *
 * This file is the composition root: it reads the environment, wires Ctrl-C and exits; the
 * commands (dispatch.ts, commands/) take everything from the CliContext and can be imported.
 */
import { isKilnError } from '../core/errors.ts';
import { loadConfig, type KilnConfig } from '../core/config.ts';
import { UsageError } from './args.ts';
import type { CliContext } from './context.ts';
import { connectOrStart } from './daemon-control.ts';
import { dispatch } from './dispatch.ts';
import { USAGE } from './help.ts';

const controller = new AbortController();
let interrupted = 0;
process.on('SIGINT', () => {
  interrupted++;
  if (interrupted > 1) process.exit(130);
  process.stderr.write('\nkiln: interrupted, cleaning up (Ctrl-C again to force)\n');
  controller.abort();
});

const say = (s: string): void => {
  process.stderr.write(`kiln: ${s}\n`);
};
/** Every KILN_* variable, read and checked once (core/config.ts); a bad one ends the command. */
function configOrExit(): KilnConfig {
  try {
    return loadConfig();
  } catch (e) {
    if (!isKilnError(e)) throw e;
    console.error(`kiln: ${e.code}: ${e.message}`);
    process.exit(2);
  }
}
const config = configOrExit();
const stateDir = config.stateDir;
const ctx: CliContext = {
  stateDir,
  cacheDir: config.cacheDir,
  debCacheDir: config.debCacheDir,
  debianMirror: config.debianMirror,
  env: process.env,
  signal: controller.signal,
  say,
  connect: () => connectOrStart(stateDir, say),
};

/**
 * Exits once stdout and stderr have taken everything written to them: into a pipe whose reader
 * is slower (`kiln sandbox exec ID -- cat big | sha256sum`), output beyond the pipe's buffer is
 * still queued, and exiting at once would cut it off. (A write's callback runs after every write
 * before it has been flushed.)
 */
function exitFlushed(code: number): void {
  let open = 2;
  const done = (): void => {
    if (--open === 0) process.exit(code);
  };
  process.stdout.write('', done);
  process.stderr.write('', done);
}

dispatch(ctx, process.argv.slice(2)).then(
  (code) => {
    exitFlushed(code);
  },
  (e: unknown) => {
    if (
      e instanceof UsageError ||
      (e instanceof Error && 'code' in e && String(e.code).startsWith('ERR_PARSE_ARGS'))
    ) {
      console.error(`kiln: ${e.message}\n\n${USAGE}`);
      process.exit(2);
    }
    if (isKilnError(e)) {
      const op = typeof e.details?.['opId'] === 'string' ? ` (op ${e.details['opId']})` : '';
      console.error(`kiln: ${e.code}: ${e.message}${op}`);
      process.exit(e.code === 'cancelled' ? 130 : e.code === 'invalid_argument' ? 2 : 1);
    }
    console.error(`kiln: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  },
);
