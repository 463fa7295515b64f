/** `kiln api-key create|list|delete`. */
import { parseArgs } from 'node:util';
import { validateName } from '../../core/validate.ts';
import { UsageError } from '../args.ts';
import type { CliContext } from '../context.ts';
import { table } from '../output.ts';

export async function apiKey(ctx: CliContext, sub: string | undefined, argv: string[]): Promise<number> {
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
      const c = await ctx.connect();
      const k = await c.createApiKey(values.name, { admin: values.admin });
      if (values.json) console.log(JSON.stringify(k, null, 2));
      else {
        console.log(k.key);
        ctx.say(
          `${k.admin ? 'admin ' : ''}API key ${k.id} ("${k.name}") created; it is shown only now${k.admin ? '' : ' (it sees only what it creates)'}`,
        );
      }
      return 0;
    }
    case 'list': {
      const c = await ctx.connect();
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
      const c = await ctx.connect();
      await c.deleteApiKey(id);
      ctx.say(`API key ${id} revoked`);
      return 0;
    }
  }
  throw new UsageError(`unknown command "kiln api-key ${sub ?? ''}"`);
}
