/** `kiln image build|list`: runs here (root, local cache), not in the daemon. */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createLogger } from '../../core/log.ts';
import { buildImage, type BuildProgress } from '../../images/build.ts';
import { imagesDir, resolveImage } from '../../images/registry.ts';
import { DEFAULT_PACKAGES, defaultImageSpec, validateImageSpec } from '../../images/spec.ts';
import { UsageError } from '../args.ts';
import type { CliContext } from '../context.ts';
import { table } from '../output.ts';

function progressPrinter(json: boolean): (p: BuildProgress) => void {
  return (p) => {
    if (json) return;
    const secs = (p.elapsedMs / 1000).toFixed(1).padStart(6);
    const mark = p.phase === 'start' ? '..' : p.phase === 'done' ? 'ok' : '  ';
    process.stderr.write(`[${p.index}/${p.total}] ${secs}s ${mark} ${p.step}: ${p.message}\n`);
  };
}

export async function image(ctx: CliContext, sub: string | undefined, argv: string[]): Promise<number> {
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
      cacheDir: ctx.cacheDir,
      debCacheDir: ctx.debCacheDir,
      mirror: ctx.debianMirror,
      force: values.force,
      signal: ctx.signal,
      onProgress: progressPrinter(values.json),
      log: createLogger({ level: 'warn' }),
    });
    if (values.json) console.log(JSON.stringify({ cached: res.cached, manifest: res.manifest }, null, 2));
    else console.log(`image ${res.manifest.name} = ${res.manifest.key}${res.cached ? ' (cached)' : ''}`);
    return 0;
  }
  if (sub === 'list' || sub === 'ls') {
    const names = (await readdir(join(imagesDir(ctx.cacheDir), 'by-name')).catch(() => [] as string[]))
      .filter((f) => f.endsWith('.json'))
      .map((f) => f.slice(0, -5));
    const rows = [];
    for (const n of names.sort()) {
      const img = await resolveImage(ctx.cacheDir, n).catch(() => undefined);
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
