/** `kiln template list|get|rm|build|pool|gc` (from a Dockerfile: template-dockerfile.ts; gc: template-gc.ts). */
import { parseArgs } from 'node:util';
import { DEFAULT_MEMORY_MIB, DEFAULT_TEMPLATE, DEFAULT_VCPUS } from '../../core/defaults.ts';
import { parseSizeMiB } from '../../core/size.ts';
import { LIMITS, validateName } from '../../core/validate.ts';
import { UsageError, intArg } from '../args.ts';
import type { CliContext } from '../context.ts';
import { table } from '../output.ts';
import { registryCredentials } from '../password-stdin.ts';
import { buildFromDockerfile } from './template-dockerfile.ts';
import { templateGc } from './template-gc.ts';

export async function template(ctx: CliContext, sub: string | undefined, argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      name: { type: 'string', default: DEFAULT_TEMPLATE },
      memory: { type: 'string', default: String(DEFAULT_MEMORY_MIB) },
      vcpus: { type: 'string', default: String(DEFAULT_VCPUS) },
      json: { type: 'boolean', default: false },
      file: { type: 'string', short: 'f' },
      'start-cmd': { type: 'string' },
      'ready-cmd': { type: 'string' },
      'build-arg': { type: 'string', multiple: true, default: [] },
      'no-cache': { type: 'boolean', default: false },
      'registry-user': { type: 'string' },
      'registry-password-stdin': { type: 'boolean', default: false },
      reset: { type: 'boolean', default: false },
      'dry-run': { type: 'boolean', default: false },
      grace: { type: 'string' },
    },
  });
  if (sub === 'gc')
    return templateGc(ctx, positionals, {
      dryRun: values['dry-run'],
      grace: values.grace,
      json: values.json,
    });
  if (sub === 'pool') return pool(ctx, positionals, values.reset, values.json);
  if (sub === 'get' || sub === 'rm') return getOrRemove(ctx, sub, positionals, values.json);
  if (sub !== 'list' && sub !== 'build') throw new UsageError(`unknown command "kiln template ${sub ?? ''}"`);
  if (sub === 'build' && values.file !== undefined) {
    if (positionals.length > 1) throw new UsageError('kiln template build -f takes one context directory');
    const registry = await registryCredentials(values['registry-user'], values['registry-password-stdin']);
    return buildFromDockerfile(ctx, {
      file: values.file,
      name: values.name,
      context: positionals[0] ?? '.',
      startCmd: values['start-cmd'],
      readyCmd: values['ready-cmd'],
      buildArgs: values['build-arg'],
      noCache: values['no-cache'],
      registry,
      json: values.json,
      memoryMiB: argv.includes('--memory')
        ? parseSizeMiB('memory', values.memory, LIMITS.memoryMiB)
        : undefined,
      vcpus: argv.includes('--vcpus') ? intArg('vcpus', values.vcpus) : undefined,
    });
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0] ?? ''}"`);
  // Check what was typed before starting a daemon.
  validateName('template', values.name);
  const memoryMiB = parseSizeMiB('memory', values.memory, LIMITS.memoryMiB);
  const vcpus = intArg('vcpus', values.vcpus) ?? DEFAULT_VCPUS;
  const c = await ctx.connect();
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
  if (!values.json) ctx.say(`building template ${values.name} (boot, wait for the agent, snapshot)`);
  const t = await c.buildTemplate({ name: values.name, memoryMiB, vcpus });
  if (values.json) console.log(JSON.stringify(t, null, 2));
  else console.log(`template ${t.name} = ${t.snapshotId ?? '?'}`);
  return 0;
}

/** `kiln template get NAME` / `kiln template rm NAME`: templates built from steps. */
async function getOrRemove(
  ctx: CliContext,
  sub: 'get' | 'rm',
  names: string[],
  json: boolean,
): Promise<number> {
  const [name, ...more] = names;
  if (!name || more.length > 0) throw new UsageError(`kiln template ${sub} takes one template name`);
  const c = await ctx.connect();
  if (sub === 'rm') {
    await c.deleteTemplate(name);
    if (json) console.log(JSON.stringify({ deleted: name }));
    else console.log(`template ${name} deleted`);
    return 0;
  }
  const t = await c.getTemplate(name);
  if (json) console.log(JSON.stringify(t, null, 2));
  else {
    console.log(`template ${t.name} (${t.id}) snapshot ${t.snapshotId ?? '-'}`);
    table(
      ['BUILD', 'STATUS', 'CREATED', 'REASON'],
      t.builds.map((b) => [b.id, b.status, b.createdAt, b.reason?.message.split('\n')[0] ?? '']),
    );
  }
  return 0;
}

/** `kiln template pool [NAME [SIZE | --reset]]`: list, show or size warm pools. */
async function pool(ctx: CliContext, args: string[], reset: boolean, json: boolean): Promise<number> {
  const [name, sizeArg, ...more] = args;
  if (more.length > 0) throw new UsageError('kiln template pool takes a template name and a size');
  if (name !== undefined) validateName('template', name);
  if (reset && (name === undefined || sizeArg !== undefined))
    throw new UsageError('kiln template pool NAME --reset takes no size');
  const size = sizeArg === undefined ? undefined : intArg('size', sizeArg);
  const c = await ctx.connect();
  const items =
    name === undefined
      ? (await c.warmPools()).items
      : [
          size !== undefined || reset
            ? await c.setWarmPool(name, reset ? null : (size ?? 0))
            : await c.warmPool(name),
        ];
  if (json) console.log(JSON.stringify(name === undefined ? items : items[0], null, 2));
  else
    table(
      ['TEMPLATE', 'SIZE', 'READY', 'STARTING', 'SET'],
      items.map((p) => [
        p.template,
        String(p.size),
        String(p.ready),
        String(p.starting),
        p.sizeSet ? 'yes' : 'default',
      ]),
    );
  return 0;
}
