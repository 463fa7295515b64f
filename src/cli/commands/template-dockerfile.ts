/**
 * `kiln template build -f Dockerfile [--name N] [--start-cmd C --ready-cmd R] [--registry-user U
 * --registry-password-stdin] [CONTEXT]`: the Dockerfile parsed into template build steps
 * (core/dockerfile.ts), each COPY source packed as a reproducible tar whose sha256 names it
 * (uploaded unless kilnd has it), the build started through /v1/template-builds (with the
 * registry credentials of a `FROM host:port/name` image) and its log printed as it comes.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseDockerfile } from '../../core/dockerfile.ts';
import { validateName } from '../../core/validate.ts';
import type { KilnClient, TemplateBuildRequest } from '../../sdk/client.ts';
import { UsageError } from '../args.ts';
import type { CliContext } from '../context.ts';

export interface DockerfileBuildOpts {
  file: string;
  name: string;
  context: string;
  startCmd?: string | undefined;
  readyCmd?: string | undefined;
  buildArgs: string[];
  noCache: boolean;
  /** Credentials for the registry of a `FROM host:port/name` image (sent once, kept by kilnd in memory only). */
  registry?: { username: string; password: string } | undefined;
  json: boolean;
  memoryMiB?: number | undefined;
  vcpus?: number | undefined;
}

/** Packs `src` (relative to `dir`) reproducibly; its sha256 is its content hash. */
async function packSource(dir: string, src: string, tmp: string): Promise<{ hash: string; path: string }> {
  if (!existsSync(join(dir, src))) throw new UsageError(`COPY source "${src}" is not in the context ${dir}`);
  const out = join(tmp, `${String(Date.now())}-${Math.random().toString(36).slice(2)}.tar`);
  execFileSync('tar', [
    '-c',
    '-f',
    out,
    '-C',
    dir,
    '--sort=name',
    '--mtime=@0',
    '--owner=0',
    '--group=0',
    '--numeric-owner',
    src,
  ]);
  const hash = createHash('sha256')
    .update(await readFile(out))
    .digest('hex');
  return { hash, path: out };
}

/** The request: steps with their files hashes, the sources uploaded that kilnd lacks. */
async function prepare(c: KilnClient, o: DockerfileBuildOpts, tmp: string): Promise<TemplateBuildRequest> {
  const args = Object.fromEntries(
    o.buildArgs.map((a) => {
      const i = a.indexOf('=');
      if (i <= 0) throw new UsageError(`--build-arg ${a}: expected NAME=VALUE`);
      return [a.slice(0, i), a.slice(i + 1)];
    }),
  );
  const df = parseDockerfile(readFileSync(o.file, 'utf8'), args);
  const steps: TemplateBuildRequest['steps'] = [];
  for (const s of df.steps) {
    if (s.type !== 'COPY') {
      steps.push({ type: s.type, args: s.args });
      continue;
    }
    const { hash, path } = await packSource(o.context, s.src, tmp);
    if (!(await c.templateFilePresent(hash))) await c.uploadTemplateFile(hash, createReadStream(path));
    steps.push({ type: 'COPY', args: [s.src, s.dest, s.user ?? '', s.mode ?? ''], filesHash: hash });
  }
  const startCmd = o.startCmd ?? df.startCmd;
  // A registry reference (`host:port/name:tag`) names an OCI image; a plain name, a kiln template.
  const image = df.from.includes('/') || df.from.includes(':');
  if (o.registry && !image)
    throw new UsageError(
      `--registry-user applies to a registry image (FROM host:port/name); "${df.from}" is a kiln template`,
    );
  return {
    name: o.name,
    ...(image ? { fromImage: df.from } : { fromTemplate: df.from }),
    ...(o.registry ? { fromImageRegistry: { type: 'registry' as const, ...o.registry } } : {}),
    steps,
    ...(startCmd ? { startCmd } : {}),
    ...(o.readyCmd ? { readyCmd: o.readyCmd } : {}),
    force: o.noCache,
    ...(o.memoryMiB !== undefined ? { memoryMiB: o.memoryMiB } : {}),
    ...(o.vcpus !== undefined ? { vcpus: o.vcpus } : {}),
  };
}

/** Builds; prints the log as it comes; 0 when the template is ready, 1 when the build failed. */
export async function buildFromDockerfile(ctx: CliContext, o: DockerfileBuildOpts): Promise<number> {
  validateName('template', o.name);
  o.context = resolve(o.context);
  if (!existsSync(o.file)) throw new UsageError(`no Dockerfile at ${o.file}`);
  const c = await ctx.connect();
  const tmp = await mkdtemp(join(tmpdir(), 'kiln-ctx-'));
  let req: TemplateBuildRequest;
  try {
    req = await prepare(c, o, tmp);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  const started = await c.startTemplateBuild(req);
  // Ctrl-C cancels the build in kilnd (its builder is killed, nothing half made is kept).
  const onAbort = (): void => {
    void c.cancelTemplateBuild(started.id).catch(() => undefined);
  };
  ctx.signal.addEventListener('abort', onAbort, { once: true });
  try {
    return await follow(c, started.id, o.json, ctx.signal);
  } finally {
    ctx.signal.removeEventListener('abort', onAbort);
  }
}

/** Prints a build's log as it comes until it ends; 0 ready, 1 failed, 130 cancelled by Ctrl-C. */
async function follow(c: KilnClient, id: string, json: boolean, signal: AbortSignal): Promise<number> {
  let offset = 0;
  for (;;) {
    const st = await c.templateBuild(id, offset);
    offset += st.logs.length;
    if (!json) for (const l of st.logs) console.log(l.message);
    if (st.status !== 'building' && st.logs.length === 0) {
      if (json) console.log(JSON.stringify({ ...st, logs: undefined }, null, 2));
      if (st.status === 'error') {
        if (!json) console.error(`kiln: template build failed: ${st.reason?.message ?? 'unknown reason'}`);
        return signal.aborted ? 130 : 1;
      }
      if (!json) console.log(`template ${st.name} = ${st.snapshotId ?? '?'}`);
      return 0;
    }
    if (st.logs.length === 0) await new Promise((r) => setTimeout(r, 500));
  }
}
