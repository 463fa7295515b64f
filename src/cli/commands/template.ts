/** `kiln template list|build`. */
import { parseArgs } from 'node:util';
import { DEFAULT_MEMORY_MIB, DEFAULT_TEMPLATE, DEFAULT_VCPUS } from '../../core/defaults.ts';
import { parseSizeMiB } from '../../core/size.ts';
import { validateName } from '../../core/validate.ts';
import { UsageError, intArg } from '../args.ts';
import type { CliContext } from '../context.ts';
import { table } from '../output.ts';

export async function template(ctx: CliContext, sub: string | undefined, argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      name: { type: 'string', default: DEFAULT_TEMPLATE },
      memory: { type: 'string', default: String(DEFAULT_MEMORY_MIB) },
      vcpus: { type: 'string', default: String(DEFAULT_VCPUS) },
      json: { type: 'boolean', default: false },
    },
  });
  if (sub !== 'list' && sub !== 'build') throw new UsageError(`unknown command "kiln template ${sub ?? ''}"`);
  // Check what was typed before starting a daemon.
  validateName('template', values.name);
  const memoryMiB = parseSizeMiB('memory', values.memory);
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
