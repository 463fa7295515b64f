/** `kiln sandbox ...`. */
import { parseArgs } from 'node:util';
import { DEFAULT_TEMPLATE } from '../../core/defaults.ts';
import type { KilnClient, SandboxView } from '../../sdk/client.ts';
import { UsageError, createOptions, intArg, pairs, shellJoin, splitCommand } from '../args.ts';
import type { CliContext } from '../context.ts';
import { commandExitCode, mib, redact, table } from '../output.ts';
import { noteFirstBuild } from './run.ts';

/** The states `sandbox list` asks for: those given, all (--all: no filter), or every state but dead. */
function listStates(given: string[], all: boolean): string[] {
  if (given.length) return given;
  return all ? [] : LIVE_STATES;
}
const LIVE_STATES = ['creating', 'running', 'pausing', 'paused', 'resuming', 'killing'];

function parse(opts: string[]) {
  return parseArgs({
    args: opts,
    allowPositionals: true,
    options: {
      template: { type: 'string', default: DEFAULT_TEMPLATE },
      timeout: { type: 'string' },
      metadata: { type: 'string', multiple: true, default: [] },
      env: { type: 'string', multiple: true, default: [] },
      state: { type: 'string', multiple: true, default: [] },
      all: { type: 'boolean', default: false },
      count: { type: 'string' },
      'allow-out': { type: 'string', multiple: true, default: [] },
      'deny-out': { type: 'string', multiple: true, default: [] },
      'no-internet': { type: 'boolean', default: false },
      volume: { type: 'string', multiple: true, default: [] },
      'show-token': { type: 'boolean', default: false },
      'no-stdin': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
  });
}

/** One `kiln sandbox SUB` call: its parsed arguments, a client and the printers. */
interface Call {
  ctx: CliContext;
  c: KilnClient;
  sub: string;
  values: ReturnType<typeof parse>['values'];
  positionals: string[];
  /** The command words after `--` (exec). */
  words: string[];
  needId: () => string;
  timeoutS: number | undefined;
  /** JSON with --json, else the table or line that `rows` prints. */
  out: (v: unknown, rows: () => void) => void;
  /** The sandbox as shown: no envd token unless --show-token (it is a credential). */
  view: (x: SandboxView) => Partial<SandboxView>;
}

async function create(k: Call): Promise<number> {
  const { ctx, c, values, out, view } = k;
  await noteFirstBuild(ctx, c, values.template, values.json);
  const s = await c.createSandbox({
    template: values.template,
    ...createOptions(values),
    ...egressFlags(values),
    ...volumeFlags(values.volume),
  });
  out(view(s), () => {
    console.log(s.sandboxId);
  });
  return 0;
}

/** --volume NAME:/PATH (repeatable), as the native API's `volumeMounts`. */
function volumeFlags(given: string[]): { volumeMounts?: { name: string; path: string }[] } {
  if (given.length === 0) return {};
  return {
    volumeMounts: given.map((g) => {
      const i = g.indexOf(':');
      if (i <= 0 || g[i + 1] !== '/')
        throw new UsageError(`--volume ${g}: expected NAME:/PATH (a volume and an absolute mount point)`);
      return { name: g.slice(0, i), path: g.slice(i + 1) };
    }),
  };
}

/** --allow-out, --deny-out (repeatable) and --no-internet, as the native API's fields. */
function egressFlags(v: Call['values']): {
  allowInternet?: boolean;
  network?: { allowOut: string[]; denyOut: string[] };
} {
  const lists = v['allow-out'].length || v['deny-out'].length;
  return {
    ...(v['no-internet'] ? { allowInternet: false } : {}),
    ...(lists ? { network: { allowOut: v['allow-out'], denyOut: v['deny-out'] } } : {}),
  };
}

/** `kiln sandbox network ID ...`: replaces the egress rules (what no flag names is cleared). */
async function network(k: Call): Promise<number> {
  const { c, values, needId, out, view } = k;
  const s = await c.updateNetwork(needId(), {
    allowOut: values['allow-out'],
    denyOut: values['deny-out'],
    allowInternet: !values['no-internet'],
  });
  out(view(s), () => {
    const n = s.network;
    table(
      ['FIELD', 'VALUE'],
      [
        ['allowOut', n.allowOut.join(' ') || '-'],
        ['denyOut', n.denyOut.join(' ') || '-'],
        ['internet', n.allowInternet ? 'yes' : 'no'],
      ],
    );
  });
  return 0;
}

async function list(k: Call): Promise<number> {
  const { c, values, out } = k;
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

async function get(k: Call): Promise<number> {
  const { c, needId, out, view } = k;
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

async function kill(k: Call): Promise<number> {
  const { c, needId } = k;
  await c.killSandbox(needId());
  return 0;
}

async function timeout(k: Call): Promise<number> {
  const { c, positionals, needId, out, view } = k;
  const secs = intArg('seconds', positionals[1]);
  if (secs === undefined) throw new UsageError('kiln sandbox timeout ID SECONDS');
  const s = await c.setTimeout(needId(), secs);
  out(view(s), () => {
    console.log(`ends at ${s.endAt}`);
  });
  return 0;
}

async function stats(k: Call): Promise<number> {
  const { c, needId, out } = k;
  const s = await c.stats(needId());
  out(s, () => {
    table(
      ['ID', 'CPU%', 'RSS', 'PSS', 'DISK'],
      [[s.sandboxId, s.cpuPct.toFixed(1), mib(s.rssBytes), mib(s.pssBytes), mib(s.diskBytes)]],
    );
  });
  return 0;
}

/** `kiln sandbox url ID PORT`: the http URL through which the host reaches a guest port. */
async function url(k: Call): Promise<number> {
  const { c, positionals, needId, out } = k;
  const port = intArg('port', positionals[1]);
  if (port === undefined) throw new UsageError('kiln sandbox url ID PORT');
  const p = await c.port(needId(), port);
  out(p, () => {
    console.log(p.url);
  });
  return 0;
}

async function logs(k: Call): Promise<number> {
  const { c, needId, out } = k;
  const r = await c.logs(needId(), { limit: 1000 });
  out(r.items, () => {
    table(
      ['TIME', 'LEVEL', 'MESSAGE'],
      r.items.map((e) => [e.at, e.level, e.message]),
    );
  });
  return 0;
}

async function pauseOrResume(k: Call): Promise<number> {
  const { c, sub, needId, timeoutS, out, view } = k;
  const s =
    sub === 'pause'
      ? await c.pause(needId())
      : await c.resume(needId(), timeoutS === undefined ? {} : { timeoutS });
  out(view(s), () => {
    console.log(`${s.sandboxId} ${s.state}`);
  });
  return 0;
}

async function fork(k: Call): Promise<number> {
  const { c, values, needId, timeoutS, out, view } = k;
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

async function exec(k: Call): Promise<number> {
  const { c, words, needId } = k;
  if (words.length === 0) throw new UsageError('kiln sandbox exec ID -- CMD');
  // Piped or redirected input goes to the command (`tar c . | kiln sandbox exec ID -- tar x`);
  // a terminal's does not (the command is not interactive), nor any with --no-stdin.
  const piped = !process.stdin.isTTY && !k.values['no-stdin'];
  const r = await c.exec(needId(), shellJoin(words), {
    onStdout: (b) => process.stdout.write(b),
    onStderr: (b) => process.stderr.write(b),
    ...(piped ? { stdin: process.stdin } : {}),
  });
  return commandExitCode(r);
}

const HANDLERS: Record<string, (k: Call) => Promise<number>> = {
  create,
  list,
  get,
  kill,
  timeout,
  stats,
  url,
  logs,
  pause: pauseOrResume,
  resume: pauseOrResume,
  fork,
  exec,
  network,
};

export async function sandbox(ctx: CliContext, sub: string | undefined, argv: string[]): Promise<number> {
  const [opts, words] = splitCommand(argv);
  const { values, positionals } = parse(opts);
  const handler = sub === undefined ? undefined : HANDLERS[sub];
  if (!handler || sub === undefined) throw new UsageError(`unknown command "kiln sandbox ${sub ?? ''}"`);
  const c = await ctx.connect();
  const id = positionals[0];
  const needId = (): string => {
    if (!id) throw new UsageError(`kiln sandbox ${sub} needs a sandbox id`);
    return id;
  };
  const timeoutS = intArg('timeout', values.timeout);
  const out = (v: unknown, rows: () => void): void => {
    if (values.json) console.log(JSON.stringify(v, null, 2));
    else rows();
  };
  const view = (x: SandboxView): Partial<SandboxView> => redact(x, values['show-token']);
  return handler({ ctx, c, sub, values, positionals, words, needId, timeoutS, out, view });
}
