/** `kiln template gc [--dry-run] [--grace S] [--json]`: template garbage collection, on demand. */
import { UsageError, intArg } from '../args.ts';
import type { CliContext } from '../context.ts';
import { mib, table } from '../output.ts';

export interface TemplateGcArgs {
  dryRun: boolean;
  grace: string | undefined;
  json: boolean;
}

/**
 * Removes the hidden templates and build layers nothing uses (`--dry-run`: only lists them),
 * then prints what went and what stays, and why.
 */
export async function templateGc(ctx: CliContext, args: string[], o: TemplateGcArgs): Promise<number> {
  if (args.length > 0) throw new UsageError(`unexpected argument "${args[0] ?? ''}"`);
  const graceS = intArg('grace', o.grace);
  const c = await ctx.connect();
  const r = await c.collectTemplates({ dryRun: o.dryRun, ...(graceS === undefined ? {} : { graceS }) });
  if (o.json) {
    console.log(JSON.stringify(r, null, 2));
    return 0;
  }
  const gone = r.dryRun ? 'would remove' : 'removed';
  table(
    ['', 'KIND', 'NAME', 'SNAPSHOT', 'SIZE', 'LAST USED', 'KEPT BECAUSE'],
    [
      ...r.removed.map((x) => [
        gone,
        x.kind,
        x.name ?? '-',
        x.snapshotId ?? '-',
        mib(x.bytes),
        x.lastUsedAt,
        '',
      ]),
      ...r.kept.map((x) => [
        'kept',
        x.kind,
        x.name ?? '-',
        x.snapshotId ?? '-',
        mib(x.bytes),
        x.lastUsedAt,
        x.reason ?? '',
      ]),
    ],
  );
  console.log(
    `${gone} ${r.removed.length}, ${mib(r.freedBytes)}; kept ${r.kept.length} (grace ${r.graceS} s)`,
  );
  return 0;
}
