/**
 * The `kiln` command line. Run it from a checkout as `./kiln ...` (which sets the machine up on
 * first use). Everything but `image build` goes through the daemon's API (the sdk), starting the
 * daemon when none runs. Tables for people, `--json` for programs.
 */
import { spawn } from 'node:child_process';
import { createReadStream, createWriteStream } from 'node:fs';
import { readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { invalidArgument, isKilnError } from '../core/errors.ts';
import { createLogger } from '../core/log.ts';
import { defaultCacheDir, defaultStateDir } from '../core/paths.ts';
import { validateName } from '../core/validate.ts';
import { buildImage, type BuildProgress } from '../images/build.ts';
import { imagesDir, resolveImage } from '../images/registry.ts';
import { DEFAULT_PACKAGES, defaultImageSpec, validateImageSpec } from '../images/spec.ts';
import type { KilnClient, SandboxView, SnapshotView } from '../sdk/client.ts';
import { KILND_MAIN, connectOrStart, socketPathOf, startDetached, stopDaemon } from './daemon-control.ts';
import { GROUPS, USAGE, helpFor } from './help.ts';
import { childExitCode, commandExitCode, redact, table } from './output.ts';

class UsageError extends Error {}

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
const stateDir = defaultStateDir();

function pairs(field: string, list: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of list) {
    const i = p.indexOf('=');
    if (i <= 0) throw invalidArgument(field, `"${p}" must be KEY=VALUE`);
    out[p.slice(0, i)] = p.slice(i + 1);
  }
  return out;
}

function intArg(field: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^-?\d+$/.test(text.trim())) throw invalidArgument(field, `must be an integer, got "${text}"`);
  return Number(text);
}

/** The options a new sandbox takes from --metadata, --env and --timeout. */
function createOptions(v: { metadata: string[]; env: string[]; timeout?: string | undefined }): {
  metadata: Record<string, string>;
  envVars: Record<string, string>;
  timeoutS?: number;
} {
  const timeoutS = intArg('timeout', v.timeout);
  return {
    metadata: pairs('metadata', v.metadata),
    envVars: pairs('env', v.env),
    ...(timeoutS === undefined ? {} : { timeoutS }),
  };
}

/** Splits `args -- cmd...` into the options part and the command words. */
function splitCommand(argv: string[]): [string[], string[]] {
  const i = argv.indexOf('--');
  return i < 0 ? [argv, []] : [argv.slice(0, i), argv.slice(i + 1)];
}

const shellJoin = (words: string[]): string =>
  words.length === 1
    ? (words[0] ?? '')
    : words.map((w) => (/^[\w@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`)).join(' ');

/** Makes sure the template exists, building `base` on first use. */
async function ensureTemplate(c: KilnClient, name: string, json: boolean): Promise<void> {
  const { items } = await c.listTemplates();
  if (items.some((t) => t.name === name && t.snapshotId)) return;
  if (name !== 'base')
    throw invalidArgument('template', `"${name}" does not exist (kiln template build --name ${name})`);
  if (!json) say('building the base template (first run only: image build, boot, snapshot)');
  await c.buildTemplate({ name });
}

async function run(argv: string[]): Promise<number> {
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
  const c = await connectOrStart(stateDir, say);
  await ensureTemplate(c, values.template, values.json);
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

/** The states `sandbox list` asks for: those given, all (--all: no filter), or every state but dead. */
function listStates(given: string[], all: boolean): string[] {
  if (given.length) return given;
  return all ? [] : LIVE_STATES;
}
const LIVE_STATES = ['creating', 'running', 'pausing', 'paused', 'resuming', 'killing'];

async function sandbox(sub: string | undefined, argv: string[]): Promise<number> {
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
  const c = await connectOrStart(stateDir, say);
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
      await ensureTemplate(c, values.template, values.json);
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

async function snapshot(sub: string | undefined, argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      name: { type: 'string' },
      kind: { type: 'string' },
      timeout: { type: 'string' },
      metadata: { type: 'string', multiple: true, default: [] },
      env: { type: 'string', multiple: true, default: [] },
      output: { type: 'string', short: 'o' },
      'show-token': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
  });
  const c = await connectOrStart(stateDir, say);
  const arg = (what: string): string => {
    const v = positionals[0];
    if (!v) throw new UsageError(`kiln snapshot ${sub ?? ''} needs ${what}`);
    return v;
  };
  const out = (v: unknown, rows: () => void): void => {
    if (values.json) console.log(JSON.stringify(v, null, 2));
    else rows();
  };
  const showSnapshot = (x: SnapshotView): void => {
    out(x, () => {
      table(
        ['FIELD', 'VALUE'],
        Object.entries(x).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]),
      );
    });
  };
  const progress = (verb: string): ((n: number) => void) => {
    let last = 0;
    return (n) => {
      if (values.json || n - last < 64 * 2 ** 20) return;
      last = n;
      say(`${verb} ${mib(n)}`);
    };
  };
  switch (sub) {
    case 'create': {
      showSnapshot(await c.snapshot(arg('a sandbox id'), values.name ? { name: values.name } : {}));
      return 0;
    }
    case 'list': {
      const r = await c.listSnapshots(values.kind ? { kind: values.kind } : {});
      out(r.items, () => {
        table(
          ['ID', 'NAME', 'KIND', 'SANDBOX', 'PARENT', 'SIZE', 'PAUSE', 'CREATED'],
          r.items.map((x) => [
            x.snapshotId,
            x.name ?? '-',
            x.kind,
            x.sandboxId ?? '-',
            x.parentId ?? '-',
            mib(x.artifacts.reduce((n, a) => n + a.size, 0)),
            x.pauseMs === null ? '-' : `${x.pauseMs} ms`,
            x.createdAt,
          ]),
        );
      });
      return 0;
    }
    case 'get':
      showSnapshot(await c.getSnapshot(arg('a snapshot id or name')));
      return 0;
    case 'rm':
      await c.deleteSnapshot(arg('a snapshot id or name'));
      return 0;
    case 'restore': {
      const s = await c.restoreSnapshot(arg('a snapshot id or name'), createOptions(values));
      out(redact(s, values['show-token']), () => {
        console.log(s.sandboxId);
      });
      return 0;
    }
    case 'export': {
      const id = arg('a snapshot id or name');
      if (!values.output) throw new UsageError('kiln snapshot export SNAPSHOT -o FILE.tar');
      const tmp = `${values.output}.part`;
      try {
        await c.exportSnapshot(id, createWriteStream(tmp, { flags: 'wx' }), progress('exported'));
        await rename(tmp, values.output);
      } catch (e) {
        await rm(tmp, { force: true });
        throw e;
      }
      say(`wrote ${values.output}`);
      return 0;
    }
    case 'import': {
      const file = arg('an archive file');
      showSnapshot(await c.importSnapshot(createReadStream(file), progress('uploaded')));
      return 0;
    }
    default:
      throw new UsageError(`unknown command "kiln snapshot ${sub ?? ''}"`);
  }
}

const mib = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;

async function template(sub: string | undefined, argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      name: { type: 'string', default: 'base' },
      memory: { type: 'string', default: '512' },
      vcpus: { type: 'string', default: '1' },
      json: { type: 'boolean', default: false },
    },
  });
  if (sub !== 'list' && sub !== 'build') throw new UsageError(`unknown command "kiln template ${sub ?? ''}"`);
  // Check what was typed before starting a daemon.
  validateName('template', values.name);
  const memoryMiB = intArg('memory', values.memory) ?? 512;
  const vcpus = intArg('vcpus', values.vcpus) ?? 1;
  const c = await connectOrStart(stateDir, say);
  if (sub === 'list') {
    const { items } = await c.listTemplates();
    if (values.json) console.log(JSON.stringify(items, null, 2));
    else
      table(
        ['NAME', 'ID', 'MEMORY', 'VCPUS', 'SNAPSHOT'],
        items.map((t) => [t.name, t.id, `${t.memoryMiB} MiB`, String(t.vcpus), t.snapshotId ?? '-']),
      );
    return 0;
  }
  if (!values.json) say(`building template ${values.name} (boot, wait for the agent, snapshot)`);
  const t = await c.buildTemplate({ name: values.name, memoryMiB, vcpus });
  if (values.json) console.log(JSON.stringify(t, null, 2));
  else console.log(`template ${t.name} = ${t.snapshotId ?? '?'}`);
  return 0;
}

function progressPrinter(json: boolean): (p: BuildProgress) => void {
  return (p) => {
    if (json) return;
    const secs = (p.elapsedMs / 1000).toFixed(1).padStart(6);
    const mark = p.phase === 'start' ? '..' : p.phase === 'done' ? 'ok' : '  ';
    process.stderr.write(`[${p.index}/${p.total}] ${secs}s ${mark} ${p.step}: ${p.message}\n`);
  };
}

async function image(sub: string | undefined, argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      name: { type: 'string', default: 'default' },
      package: { type: 'string', multiple: true, default: [] },
      force: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
  });
  if (sub === 'build') {
    const spec = validateImageSpec(
      defaultImageSpec({ name: values.name, packages: [...DEFAULT_PACKAGES, ...values.package] }),
    );
    const res = await buildImage({
      spec,
      cacheDir: defaultCacheDir(),
      debCacheDir: process.env['KILN_DEB_CACHE_DIR'],
      force: values.force,
      signal: controller.signal,
      onProgress: progressPrinter(values.json),
      log: createLogger({ level: 'warn' }),
    });
    if (values.json) console.log(JSON.stringify({ cached: res.cached, manifest: res.manifest }, null, 2));
    else console.log(`image ${res.manifest.name} = ${res.manifest.key}${res.cached ? ' (cached)' : ''}`);
    return 0;
  }
  if (sub === 'list' || sub === 'ls') {
    const names = (await readdir(join(imagesDir(defaultCacheDir()), 'by-name')).catch(() => [] as string[]))
      .filter((f) => f.endsWith('.json'))
      .map((f) => f.slice(0, -5));
    const rows = [];
    for (const n of names.sort()) {
      const img = await resolveImage(defaultCacheDir(), n).catch(() => undefined);
      if (img)
        rows.push({
          name: n,
          key: img.key,
          kernel: img.manifest.kernel.release,
          createdAt: img.manifest.createdAt,
        });
    }
    if (values.json) console.log(JSON.stringify(rows, null, 2));
    else
      table(
        ['NAME', 'KEY', 'KERNEL', 'CREATED'],
        rows.map((r) => [r.name, r.key, r.kernel, r.createdAt]),
      );
    return 0;
  }
  throw new UsageError(`unknown command "kiln image ${sub ?? ''}"`);
}

async function apiKey(sub: string | undefined, argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      name: { type: 'string', default: 'default' },
      admin: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
  });
  switch (sub) {
    case 'create': {
      validateName('name', values.name);
      const c = await connectOrStart(stateDir, say);
      const k = await c.createApiKey(values.name, { admin: values.admin });
      if (values.json) console.log(JSON.stringify(k, null, 2));
      else {
        console.log(k.key);
        say(
          `${k.admin ? 'admin ' : ''}API key ${k.id} ("${k.name}") created; it is shown only now${k.admin ? '' : ' (it sees only what it creates)'}`,
        );
      }
      return 0;
    }
    case 'list': {
      const c = await connectOrStart(stateDir, say);
      const { items } = await c.listApiKeys();
      if (values.json) console.log(JSON.stringify(items, null, 2));
      else
        table(
          ['ID', 'NAME', 'PREFIX', 'ADMIN', 'CREATED', 'LAST USED'],
          items.map((k) => [
            k.id,
            k.name,
            `${k.prefix}…`,
            k.admin ? 'yes' : 'no',
            k.createdAt,
            k.lastUsedAt ?? '-',
          ]),
        );
      return 0;
    }
    case 'delete': {
      const id = positionals[0];
      if (!id) throw new UsageError('kiln api-key delete needs the key id (kiln api-key list)');
      const c = await connectOrStart(stateDir, say);
      await c.deleteApiKey(id);
      say(`API key ${id} revoked`);
      return 0;
    }
  }
  throw new UsageError(`unknown command "kiln api-key ${sub ?? ''}"`);
}

const shellQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

async function e2b(sub: string | undefined): Promise<number> {
  if (sub !== 'env') throw new UsageError(`unknown command "kiln e2b ${sub ?? ''}"`);
  const c = await connectOrStart(stateDir, say);
  const e = await c.e2bEnv();
  console.log(
    `export E2B_API_URL=${shellQuote(e.apiUrl)} E2B_SANDBOX_URL=${shellQuote(e.sandboxUrl)} E2B_API_KEY=${shellQuote(e.apiKey)}`,
  );
  return 0;
}

async function daemon(argv: string[]): Promise<number> {
  if (argv[0] === 'stop') {
    const stopped = await stopDaemon(stateDir);
    say(stopped ? 'kilnd stopped' : 'no kilnd was running');
    return 0;
  }
  const { values } = parseArgs({ args: argv, options: { detach: { type: 'boolean', default: false } } });
  if (values.detach) {
    await startDetached(stateDir, say);
    say(`kilnd is up on ${socketPathOf(stateDir)}`);
    return 0;
  }
  const child = spawn(process.execPath, [KILND_MAIN], { stdio: 'inherit', env: process.env });
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

async function main(argv: string[]): Promise<number> {
  const asked = help(argv);
  if (asked !== undefined) return asked;
  const [cmd, sub, ...rest] = argv;
  switch (cmd) {
    case undefined:
      console.log(USAGE);
      return 0;
    case 'run':
      return run(argv.slice(1));
    case 'sandbox':
      return sandbox(sub, rest);
    case 'snapshot':
      return snapshot(sub, rest);
    case 'template':
      return template(sub, rest);
    case 'image':
      return image(sub, rest);
    case 'api-key':
      return apiKey(sub, rest);
    case 'e2b':
      return e2b(sub);
    case 'daemon':
      return daemon(argv.slice(1));
    default:
      throw new UsageError(`unknown command "${argv.join(' ')}"`);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
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
