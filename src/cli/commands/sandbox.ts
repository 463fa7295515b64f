/** `kiln sandbox ...`. */
import { parseArgs } from 'node:util';
import type { SandboxView } from '../../sdk/client.ts';
import { UsageError, createOptions, intArg, pairs, shellJoin, splitCommand } from '../args.ts';
import type { CliContext } from '../context.ts';
import { commandExitCode, mib, redact, table } from '../output.ts';
import { ensureTemplate } from './run.ts';

/** The states `sandbox list` asks for: those given, all (--all: no filter), or every state but dead. */
function listStates(given: string[], all: boolean): string[] {
  if (given.length) return given;
  return all ? [] : LIVE_STATES;
}
const LIVE_STATES = ['creating', 'running', 'pausing', 'paused', 'resuming', 'killing'];

export async function sandbox(ctx: CliContext, sub: string | undefined, argv: string[]): Promise<number> {
  const [opts, words] = splitCommand(argv);
  const { values, positionals } = parseArgs({
    args: opts,
    allowPositionals: true,
    options: {
      template: { type: 'string', default: 'base' },
      timeout: { type: 'string' },
      metadata: { type: 'string', multiple: true, default: [] },
      env: { type: 'string', multiple: true, default: [] },
      state: { type: 'string', multiple: true, default: [] },
      all: { type: 'boolean', default: false },
      count: { type: 'string' },
      'show-token': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
  });
  const c = await ctx.connect();
  const id = positionals[0];
  const needId = (): string => {
    if (!id) throw new UsageError(`kiln sandbox ${sub ?? ''} needs a sandbox id`);
    return id;
  };
  const timeoutS = intArg('timeout', values.timeout);
  const out = (v: unknown, rows: () => void): void => {
    if (values.json) console.log(JSON.stringify(v, null, 2));
    else rows();
  };
  // The envd access token is a credential: shown only when asked for.
  const view = (x: SandboxView): Partial<SandboxView> => redact(x, values['show-token']);
  switch (sub) {
    case 'create': {
      await ensureTemplate(ctx, c, values.template, values.json);
      const s = await c.createSandbox({ template: values.template, ...createOptions(values) });
      out(view(s), () => {
        console.log(s.sandboxId);
      });
      return 0;
    }
    case 'list': {
      const r = await c.listSandboxes({
        states: listStates(values.state, values.all),
        metadata: pairs('metadata', values.metadata),
      });
      // Never a token in a list, whatever the flags: one command must not print every credential.
      out(
        r.items.map((x) => redact(x)),
        () => {
          table(
            ['ID', 'TEMPLATE', 'STATE', 'CONDITION', 'MEMORY', 'ENDS'],
            r.items.map((s) => [
              s.sandboxId,
              s.templateId,
              s.state,
              s.condition?.code ?? '-',
              `${s.memoryMiB} MiB`,
              s.endAt,
            ]),
          );
        },
      );
      return 0;
    }
    case 'get': {
      const s = await c.getSandbox(needId());
      out(view(s), () => {
        table(
          ['FIELD', 'VALUE'],
          Object.entries(view(s)).map(([k, v]) => [
            k,
            k === 'condition' && s.condition
              ? `${s.condition.code} since ${s.condition.since}: ${s.condition.message}`
              : typeof v === 'string'
                ? v
                : JSON.stringify(v),
          ]),
        );
      });
      return 0;
    }
    case 'kill':
      await c.killSandbox(needId());
      return 0;
    case 'timeout': {
      const secs = intArg('seconds', positionals[1]);
      if (secs === undefined) throw new UsageError('kiln sandbox timeout ID SECONDS');
      const s = await c.setTimeout(needId(), secs);
      out(view(s), () => {
        console.log(`ends at ${s.endAt}`);
      });
      return 0;
    }
    case 'stats': {
      const s = await c.stats(needId());
      out(s, () => {
        table(
          ['ID', 'CPU%', 'RSS', 'PSS', 'DISK'],
          [[s.sandboxId, s.cpuPct.toFixed(1), mib(s.rssBytes), mib(s.pssBytes), mib(s.diskBytes)]],
        );
      });
      return 0;
    }
    case 'logs': {
      const r = await c.logs(needId(), { limit: 1000 });
      out(r.items, () => {
        table(
          ['TIME', 'LEVEL', 'MESSAGE'],
          r.items.map((e) => [e.at, e.level, e.message]),
        );
      });
      return 0;
    }
    case 'pause':
    case 'resume': {
      const s =
        sub === 'pause'
          ? await c.pause(needId())
          : await c.resume(needId(), timeoutS === undefined ? {} : { timeoutS });
      out(view(s), () => {
        console.log(`${s.sandboxId} ${s.state}`);
      });
      return 0;
    }
    case 'fork': {
      const r = await c.fork(needId(), {
        count: intArg('count', values.count) ?? 1,
        ...(timeoutS === undefined ? {} : { timeoutS }),
      });
      const shown = {
        results: r.results.map((x) => ('sandbox' in x ? { ...x, sandbox: view(x.sandbox) } : x)),
      };
      out(shown, () => {
        table(
          ['SANDBOX', 'STATE', 'ERROR'],
          r.results.map((x) =>
            'sandbox' in x ? [x.sandbox.sandboxId, x.sandbox.state, ''] : ['-', 'failed', x.error.message],
          ),
        );
      });
      return r.results.every((x) => 'sandbox' in x) ? 0 : 1;
    }
    case 'exec': {
      if (words.length === 0) throw new UsageError('kiln sandbox exec ID -- CMD');
      const r = await c.exec(needId(), shellJoin(words), {
        onStdout: (b) => process.stdout.write(b),
        onStderr: (b) => process.stderr.write(b),
      });
      return commandExitCode(r);
    }
    default:
      throw new UsageError(`unknown command "kiln sandbox ${sub ?? ''}"`);
  }
}
