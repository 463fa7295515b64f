/** `kiln snapshot ...`. */
import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import type { Writable } from 'node:stream';
import type { SnapshotView } from '../../sdk/client.ts';
import { UsageError, createOptions } from '../args.ts';
import type { CliContext } from '../context.ts';
import { mib, redact, table } from '../output.ts';

function snapshotTable(r: { items: SnapshotView[] }, json: boolean): void {
  if (json) {
    console.log(JSON.stringify(r.items, null, 2));
    return;
  }
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
}

/** Writes `file` through `FILE.part`, renamed into place only when complete (removed on failure). */
async function exportTo(file: string, write: (w: Writable) => Promise<unknown>): Promise<void> {
  const tmp = `${file}.part`;
  try {
    await write(createWriteStream(tmp, { flags: 'wx' }));
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

export async function snapshot(ctx: CliContext, sub: string | undefined, argv: string[]): Promise<number> {
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
  const c = await ctx.connect();
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
      ctx.say(`${verb} ${mib(n)}`);
    };
  };
  switch (sub) {
    case 'create': {
      showSnapshot(await c.snapshot(arg('a sandbox id'), values.name ? { name: values.name } : {}));
      return 0;
    }
    case 'list':
      snapshotTable(await c.listSnapshots(values.kind ? { kind: values.kind } : {}), values.json);
      return 0;
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
      await exportTo(values.output, (w) => c.exportSnapshot(id, w, progress('exported')));
      ctx.say(`wrote ${values.output}`);
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
