/** `kiln volume create|list|rm`. */
import { parseArgs } from 'node:util';
import { validateName } from '../../core/validate.ts';
import { UsageError } from '../args.ts';
import type { CliContext } from '../context.ts';
import { table } from '../output.ts';

export async function volume(ctx: CliContext, sub: string | undefined, argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { json: { type: 'boolean', default: false } },
  });
  switch (sub) {
    case 'create': {
      const name = positionals[0];
      if (!name) throw new UsageError('kiln volume create needs a name');
      validateName('name', name);
      const v = await (await ctx.connect()).createVolume(name);
      if (values.json) console.log(JSON.stringify(v, null, 2));
      else console.log(v.id);
      return 0;
    }
    case 'list':
    case 'ls': {
      const { items } = await (await ctx.connect()).listVolumes();
      if (values.json) console.log(JSON.stringify(items, null, 2));
      else
        table(
          ['ID', 'NAME', 'CREATED', 'MOUNTED BY'],
          items.map((v) => [v.id, v.name, v.createdAt, v.mountedBy.join(',') || '-']),
        );
      return 0;
    }
    case 'rm': {
      const id = positionals[0];
      if (!id) throw new UsageError('kiln volume rm needs a volume id or name (kiln volume list)');
      await (await ctx.connect()).deleteVolume(id);
      if (values.json) console.log(JSON.stringify({ deleted: id }));
      else ctx.say(`volume ${id} deleted`);
      return 0;
    }
  }
  throw new UsageError(`unknown command "kiln volume ${sub ?? ''}"`);
}
