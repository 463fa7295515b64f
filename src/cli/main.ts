/**
 * The `kiln` command line. Run it from a checkout as `./kiln ...` (which sets the machine up on
 * first use). Tables for people, `--json` for programs.
 */
import { parseArgs } from 'node:util';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { invalidArgument, isKilnError } from '../core/errors.ts';
import { createLogger } from '../core/log.ts';
import { newId } from '../core/ids.ts';
import { validateMemoryMiB, validateName, validateVcpus } from '../core/validate.ts';
import { defaultCacheDir, defaultStateDir } from '../core/paths.ts';
import { buildImage, type BuildProgress } from '../images/build.ts';
import { imagesDir, resolveImage } from '../images/registry.ts';
import { defaultImageSpec, DEFAULT_PACKAGES, validateImageSpec } from '../images/spec.ts';
import { QemuDriver } from '../vmm/qemu/qemu-driver.ts';
import { AGENT_PORT } from '../vmm/qemu/args.ts';
import { waitForHttp } from '../vmm/health.ts';

const USAGE = `kiln — microVM sandboxes on one host

usage:
  kiln run [--image NAME] [--memory MiB] [--vcpus N] [--json]
      build the default image if needed, boot a microVM from it, wait for its guest agent,
      report, and stop it (leaving nothing behind)
  kiln image build [--name NAME] [--package PKG]... [--force] [--json]
      build a guest image from Debian packages (cached by content; --force rebuilds)
  kiln image list [--json]
  kiln help

environment:
  KILN_CACHE_DIR   images and downloads (default ~/.cache/kiln)
  KILN_STATE_DIR   VM runtime directories (default ~/.local/state/kiln)
  KILN_ACCEL       kvm | tcg | auto (default auto: KVM only if a probe guest boots fast)
`;

class UsageError extends Error {}

const controller = new AbortController();
let interrupted = 0;
process.on('SIGINT', () => {
  interrupted++;
  if (interrupted > 1) process.exit(130);
  process.stderr.write('\nkiln: interrupted, cleaning up (Ctrl-C again to force)\n');
  controller.abort();
});
process.on('SIGTERM', () => {
  controller.abort();
});

function progressPrinter(json: boolean): (p: BuildProgress) => void {
  return (p) => {
    if (json) return;
    const secs = (p.elapsedMs / 1000).toFixed(1).padStart(6);
    const mark = p.phase === 'start' ? '..' : p.phase === 'done' ? 'ok' : '  ';
    process.stderr.write(`[${p.index}/${p.total}] ${secs}s ${mark} ${p.step}: ${p.message}\n`);
  };
}

async function imageBuild(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      name: { type: 'string', default: 'default' },
      package: { type: 'string', multiple: true, default: [] },
      force: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
  });
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
}

async function imageList(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { json: { type: 'boolean', default: false } } });
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
        rootfsBytes: img.manifest.files.rootfs.size,
      });
  }
  if (values.json) {
    console.log(JSON.stringify(rows, null, 2));
    return;
  }
  table(
    ['NAME', 'KEY', 'KERNEL', 'CREATED'],
    rows.map((r) => [r.name, r.key, r.kernel, r.createdAt]),
  );
}

function table(head: string[], rows: string[][]): void {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string =>
    r
      .map((c, i) => c.padEnd(w[i] ?? 0))
      .join('  ')
      .trimEnd();
  console.log(line(head));
  for (const r of rows) console.log(line(r));
}

/** A command-line integer; anything else is `invalid_argument` quoting what was typed. */
function intArg(field: string, text: string): number {
  if (!/^-?\d+$/.test(text.trim())) throw invalidArgument(field, `must be an integer, got "${text}"`);
  return Number(text);
}

async function runCmd(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      image: { type: 'string', default: 'default' },
      memory: { type: 'string', default: '512' },
      vcpus: { type: 'string', default: '1' },
      json: { type: 'boolean', default: false },
    },
  });
  // Check what the user typed before building or booting anything.
  const memoryMiB = validateMemoryMiB(intArg('memoryMiB', values.memory));
  const vcpus = validateVcpus(intArg('vcpus', values.vcpus));
  validateName('image', values.image);
  const cacheDir = defaultCacheDir();
  let image = await resolveImage(cacheDir, values.image).catch(() => undefined);
  if (!image) {
    if (values.image !== 'default') await resolveImage(cacheDir, values.image); // throws not_found
    if (!values.json) process.stderr.write('kiln: building the default guest image (first run only)\n');
    await buildImage({
      spec: defaultImageSpec(),
      cacheDir,
      signal: controller.signal,
      onProgress: progressPrinter(values.json),
    });
    image = await resolveImage(cacheDir, values.image);
  }
  const driver = new QemuDriver({
    runDir: join(defaultStateDir(), 'vms'),
    log: createLogger({ level: 'warn' }),
  });
  const id = newId('vm');
  const t0 = Date.now();
  const info = await driver.start(
    {
      id,
      kernel: image.kernel,
      initrd: image.initrd,
      rootfs: image.rootfs,
      memoryMiB,
      vcpus,
    },
    { signal: controller.signal },
  );
  try {
    const port = info.ports[AGENT_PORT];
    if (!values.json)
      process.stderr.write(
        `kiln: VM ${id} booting (pid ${info.pid}, ${info.accel}), agent on 127.0.0.1:${port}\n`,
      );
    await waitForHttp(`http://127.0.0.1:${port}/health`, {
      timeoutMs: 120_000,
      signal: controller.signal,
      alive: async () => (await driver.status(id)).state !== 'stopped',
    });
    const readyMs = Date.now() - t0;
    if (values.json)
      console.log(
        JSON.stringify({ id, image: image.key, accel: info.accel, pid: info.pid, agentPort: port, readyMs }),
      );
    else
      console.log(
        `VM ${id} is up: guest agent answered /health after ${(readyMs / 1000).toFixed(2)} s (${info.accel})`,
      );
  } finally {
    await driver.stop(id);
    await driver.close();
  }
}

async function main(argv: string[]): Promise<void> {
  const [cmd, sub, ...rest] = argv;
  if (cmd === undefined || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    console.log(USAGE);
    return;
  }
  if (cmd === 'run') return runCmd(argv.slice(1));
  if (cmd === 'image' && sub === 'build') return imageBuild(rest);
  if (cmd === 'image' && (sub === 'list' || sub === 'ls')) return imageList(rest);
  throw new UsageError(`unknown command "${argv.join(' ')}"`);
}

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (e: unknown) => {
    if (
      e instanceof UsageError ||
      (e instanceof Error && 'code' in e && String(e.code).startsWith('ERR_PARSE_ARGS'))
    ) {
      console.error(`kiln: ${e.message}\n\n${USAGE}`);
      process.exit(2);
    }
    if (isKilnError(e)) {
      console.error(`kiln: ${e.code}: ${e.message}`);
      process.exit(e.code === 'cancelled' ? 130 : e.code === 'invalid_argument' ? 2 : 1);
    }
    console.error(`kiln: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    process.exit(1);
  },
);
