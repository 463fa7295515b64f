/** `kiln image build|list`: runs here (root, local cache), not in the daemon. */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createLogger } from '../../core/log.ts';
import { parseSizeMiB } from '../../core/size.ts';
import { LIMITS } from '../../core/validate.ts';
import { buildImage, type BuildProgress } from '../../images/build.ts';
import { buildImageFromOci } from '../../images/oci/build-oci.ts';
import { parseReference } from '../../images/oci/reference.ts';
import { imagesDir, resolveImage } from '../../images/registry.ts';
import { DEFAULT_PACKAGES, defaultImageSpec, validateImageSpec } from '../../images/spec.ts';
import { UsageError } from '../args.ts';
import type { CliContext } from '../context.ts';
import { table } from '../output.ts';
import { readPasswordStdin } from '../password-stdin.ts';

function progressPrinter(json: boolean): (p: Omit<BuildProgress, 'step'> & { step: string }) => void {
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
      name: { type: 'string' },
      package: { type: 'string', multiple: true, default: [] },
      'from-image': { type: 'string' },
      'insecure-registry': { type: 'string', multiple: true, default: [] },
      'registry-user': { type: 'string' },
      'registry-password-stdin': { type: 'boolean', default: false },
      force: { type: 'boolean', default: false },
      disk: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  if (sub === 'build' && values['from-image'] !== undefined) {
    if (values.disk !== undefined)
      throw new UsageError("--disk is for Debian images: an OCI image's filesystem is sized to its content");
    return fromImage(ctx, values['from-image'], values);
  }
  if (sub === 'build') {
    const spec = validateImageSpec(
      defaultImageSpec({
        name: values.name ?? 'default',
        packages: [...DEFAULT_PACKAGES, ...values.package],
        ...(values.disk === undefined
          ? {}
          : { rootfsSizeMiB: parseSizeMiB('disk', values.disk, LIMITS.diskMiB) }),
      }),
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

/** An image name from a reference: `<last repository part>-<tag or short digest>`, as a valid name. */
export function nameFromReference(ref: string): string {
  const r = parseReference(ref);
  const tail = `${r.repository.split('/').at(-1) ?? 'image'}-${r.tag ?? (r.digest ?? '').slice(7, 19)}`;
  return tail
    .toLowerCase()
    .replace(/[^a-z0-9_.-]+/g, '-')
    .replace(/\.{2,}/g, '.')
    .replace(/^[^a-z0-9]+/, '')
    .slice(0, 63);
}

/** `kiln image build --from-image REF`: an image whose root filesystem is an OCI image's. */
async function fromImage(
  ctx: CliContext,
  ref: string,
  v: {
    name?: string | undefined;
    package: string[];
    force: boolean;
    json: boolean;
    'insecure-registry': string[];
    'registry-user'?: string | undefined;
    'registry-password-stdin': boolean;
  },
): Promise<number> {
  if (v.package.length > 0)
    throw new UsageError('--package does not apply to --from-image (install packages in the image)');
  if (v['registry-password-stdin'] && v['registry-user'] === undefined)
    throw new UsageError('--registry-password-stdin needs --registry-user');
  const credentials =
    v['registry-user'] === undefined
      ? undefined
      : {
          username: v['registry-user'],
          password: v['registry-password-stdin'] ? await readPasswordStdin() : '',
        };
  const res = await buildImageFromOci({
    reference: ref,
    name: v.name ?? nameFromReference(ref),
    cacheDir: ctx.cacheDir,
    debCacheDir: ctx.debCacheDir,
    insecureRegistries: v['insecure-registry'],
    credentials,
    force: v.force,
    signal: ctx.signal,
    onProgress: progressPrinter(v.json),
    log: createLogger({ level: 'warn' }),
  });
  if (v.json) console.log(JSON.stringify(res, null, 2));
  else {
    const c = res.oci.config;
    console.log(
      `image ${res.manifest.name} = ${res.manifest.key}${res.cached ? ' (cached)' : ''} from ${res.oci.reference} (${res.oci.digest})`,
    );
    const start = [...(c.entrypoint ?? []), ...(c.cmd ?? [])];
    console.log(
      `  user ${c.user ?? '(root)'}, workdir ${c.workdir ?? '/'}, start ${start.length > 0 ? JSON.stringify(start) : '(none)'}`,
    );
  }
  return 0;
}
