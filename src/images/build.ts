import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import {
  chmod,
  copyFile,
  mkdir,
  readFile,
  readdir,
  rename,
  rm,
  statfs,
  writeFile,
  stat,
  symlink,
} from 'node:fs/promises';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { KilnError, asKilnError } from '../core/errors.ts';
import { run } from '../core/exec.ts';
import { fsyncDir, writeFileAtomic } from '../core/fs-atomic.ts';
import { nullLogger } from '../core/log.ts';
import { pidAlive } from '../core/proc.ts';
import { bundleAgent } from './agent-bundle.ts';
import { downloadShared, publishDebCache, seedDebCache } from './deb-cache.ts';
import { imagesDir, readManifest, type ImageManifest } from './registry.ts';
import { validateImageSpec, type ImageSpec } from './spec.ts';

/** Bump when the build recipe changes in a way the inputs below do not capture. */
export const BUILDER_VERSION = 1;

export type BuildStep =
  'preflight' | 'kernel' | 'initramfs' | 'rootfs' | 'customise' | 'filesystem' | 'finish';
const STEPS: BuildStep[] = [
  'preflight',
  'kernel',
  'initramfs',
  'rootfs',
  'customise',
  'filesystem',
  'finish',
];

export interface BuildProgress {
  step: BuildStep;
  index: number;
  total: number;
  phase: 'start' | 'done' | 'detail';
  message: string;
  elapsedMs: number;
}

export interface BuildOpts {
  spec: ImageSpec;
  /** Cache root (images, downloaded .debs); see docs/ARCHITECTURE.md "On disk". */
  cacheDir: string;
  /** Shared .deb download cache; default `<cacheDir>/debs`. */
  debCacheDir?: string | undefined;
  /** debootstrap's mirror when the spec names none (the config's KILN_DEBIAN_MIRROR); default: the host's apt source. */
  mirror?: string | undefined;
  onProgress?: (p: BuildProgress) => void;
  signal?: AbortSignal;
  log?: Logger;
  /** Rebuild even when a cached image with the same key exists. */
  force?: boolean;
}

export interface BuildResult {
  manifest: ImageManifest;
  cached: boolean;
}

const TOOLS = [
  'debootstrap',
  'mkfs.ext4',
  'cpio',
  'gzip',
  'apt-get',
  'apt-cache',
  'dpkg-deb',
  'chroot',
  'du',
  'depmod',
];
const BUSYBOX = '/bin/busybox';
const MIN_FREE_MIB = 3072;

const guestFile = (name: string): string => fileURLToPath(new URL(`./guest-files/${name}`, import.meta.url));

const sha256 = (s: string | Uint8Array): string => createHash('sha256').update(s).digest('hex');

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * Builds a guest image (kernel, initramfs, ext4 root filesystem) from Debian packages, cached by a
 * content hash of its inputs: an unchanged spec returns the cached image at once. The image is
 * assembled in a temporary directory and renamed into place only when complete, so an interrupted
 * build (SIGINT, crash) never leaves anything that looks like an image; its leftovers are removed
 * on the next build.
 */
export async function buildImage(opts: BuildOpts): Promise<BuildResult> {
  const spec = validateImageSpec(opts.spec);
  const log = (opts.log ?? nullLogger).child({ image: spec.name });
  const root = imagesDir(opts.cacheDir);
  const debs = opts.debCacheDir ?? join(opts.cacheDir, 'debs');
  const t0 = Date.now();
  let current: BuildStep = 'preflight';
  const progress = (step: BuildStep, phase: BuildProgress['phase'], message: string): void => {
    current = step;
    opts.onProgress?.({
      step,
      index: STEPS.indexOf(step) + 1,
      total: STEPS.length,
      phase,
      message,
      elapsedMs: Date.now() - t0,
    });
  };
  const checkAbort = (): void => {
    if (opts.signal?.aborted) throw new KilnError('cancelled', `image build cancelled during ${current}`);
  };

  progress('preflight', 'start', 'checking tools, permissions and space');
  await preflight(opts.cacheDir);
  await mkdir(root, { recursive: true });
  await mkdir(debs, { recursive: true });
  await removeStaleBuilds(root, log);
  const kernel = await resolveKernel(spec.kernelPackage, opts.signal);
  const agent = await bundleAgent();
  const initramfsInit = await readFile(guestFile('initramfs-init.sh'), 'utf8');
  const kilnInit = await readFile(guestFile('kiln-init.sh'), 'utf8');
  // The guest agent's runtime is this very Node (24 LTS, pinned by .node-version): bookworm's
  // nodejs is 18 and end of life, and one runtime for host and guest means one set of tests.
  const nodeBinary = process.execPath;
  const nodeSha = await sha256File(nodeBinary);
  // The recipe itself is an input: any change to this file rebuilds (BUILDER_VERSION is kept
  // for changes elsewhere that alter the image).
  const recipe = await readFile(fileURLToPath(import.meta.url), 'utf8');
  const key = sha256(
    JSON.stringify({
      builder: BUILDER_VERSION,
      recipe: sha256(recipe),
      suite: spec.suite,
      packages: [...spec.packages].sort(),
      kernel: `${kernel.pkg}=${kernel.version}`,
      modules: spec.modules,
      rootfsSizeMiB: spec.rootfsSizeMiB,
      files: { initramfsInit: sha256(initramfsInit), kilnInit: sha256(kilnInit), agent: sha256(agent) },
      node: { version: process.version, sha256: nodeSha },
    }),
  ).slice(0, 32);
  const finalDir = join(root, key);
  if (!opts.force) {
    const cached = await readManifest(finalDir).catch(() => undefined);
    if (cached) {
      await pointName(root, spec.name, key);
      progress('preflight', 'done', `cached image ${key} is up to date`);
      return { manifest: { ...cached, name: spec.name }, cached: true };
    }
  }
  progress('preflight', 'done', `building image ${key}`);

  const tmp = join(root, `.tmp-${key}-${process.pid}`);
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp);
  try {
    // 1. kernel
    progress('kernel', 'start', `${kernel.pkg} ${kernel.version}`);
    const deb = await downloadDeb(kernel.pkg, kernel.version, debs, opts.signal);
    const kroot = join(tmp, 'kernel-pkg');
    await run('dpkg-deb', ['-x', deb, kroot], { failCode: 'image_build_failed', signal: opts.signal });
    const boot = await readdir(join(kroot, 'boot'));
    const vmlinuz = boot.find((f) => f.startsWith('vmlinuz-'));
    if (!vmlinuz) throw new KilnError('image_build_failed', `kernel: ${kernel.pkg} has no /boot/vmlinuz-*`);
    const kver = vmlinuz.slice('vmlinuz-'.length);
    await copyFile(join(kroot, 'boot', vmlinuz), join(tmp, 'vmlinuz'));
    progress('kernel', 'done', `kernel ${kver}`);
    checkAbort();

    // 2. initramfs
    progress('initramfs', 'start', `busybox + modules ${spec.modules.join(', ')}`);
    const modDir = join(kroot, 'lib', 'modules', kver);
    // Debian's kernel package leaves modules.dep to depmod at install time: make it here.
    await run('depmod', ['-b', kroot, kver], { failCode: 'image_build_failed', signal: opts.signal });
    const order = await moduleLoadOrder(modDir, spec.modules);
    const iroot = join(tmp, 'initramfs-root');
    await mkdir(join(iroot, 'bin'), { recursive: true });
    await mkdir(join(iroot, 'modules'));
    await copyFile(BUSYBOX, join(iroot, 'bin', 'busybox'));
    await chmod(join(iroot, 'bin', 'busybox'), 0o755);
    for (const m of order)
      await installModule(join(modDir, m.path), join(iroot, 'modules', `${m.name}.ko`), opts.signal);
    await writeFile(join(iroot, 'modules.order'), order.map((m) => m.name).join('\n') + '\n');
    await writeFile(join(iroot, 'init'), initramfsInit, { mode: 0o755 });
    await run(
      'sh',
      [
        '-c',
        'cd "$1" && find . -print0 | cpio --null -o -H newc --quiet | gzip -6 > "$2"',
        'sh',
        iroot,
        join(tmp, 'initrd.img'),
      ],
      {
        failCode: 'image_build_failed',
        signal: opts.signal,
      },
    );
    await rm(kroot, { recursive: true, force: true });
    progress('initramfs', 'done', `${order.length} modules: ${order.map((m) => m.name).join(' ')}`);
    checkAbort();

    // 3. root filesystem
    const mirror = spec.mirror ?? opts.mirror ?? (await detectMirror());
    progress('rootfs', 'start', `debootstrap ${spec.suite} from ${mirror} (about a minute)`);
    const rroot = join(tmp, 'rootfs');
    // debootstrap writes into its cache dir in place: each build gets its own (links to the
    // shared one's files), and what it fetched is shared once it is done.
    const shared = join(debs, 'debootstrap');
    const dcache = join(tmp, 'debootstrap-cache');
    await seedDebCache(shared, dcache);
    await run(
      'debootstrap',
      [
        '--variant=minbase',
        `--include=${[...spec.packages].sort().join(',')}`,
        `--cache-dir=${dcache}`,
        spec.suite,
        rroot,
        mirror,
      ],
      {
        failCode: 'image_build_failed',
        signal: opts.signal,
        onLine: (l) => {
          // Report debootstrap's stages, not each of its ~200 packages.
          if (
            l.startsWith('I: ') &&
            !/^I: (Retrieving|Validating|Extracting|Unpacking|Configuring) (?!(required|base) packages)/.test(
              l,
            )
          ) {
            progress('rootfs', 'detail', l.slice(3));
          }
        },
      },
    );
    await publishDebCache(dcache, shared);
    await rm(dcache, { recursive: true, force: true });
    progress('rootfs', 'done', 'debootstrap finished');
    checkAbort();

    // 4. customise
    progress('customise', 'start', 'user, sudo, init, guest agent');
    await customise(rroot, { kilnInit, agent, nodeBinary, signal: opts.signal });
    progress(
      'customise',
      'done',
      'user "user" (uid 1000, passwordless sudo), /sbin/kiln-init, /opt/kiln/agent.mjs',
    );
    checkAbort();

    // 5. filesystem
    const { stdout } = await run('du', ['-sm', '-x', rroot], { failCode: 'image_build_failed' });
    const usedMiB = Number(stdout.split(/\s/)[0]);
    const sizeMiB = Math.max(spec.rootfsSizeMiB, Math.ceil(usedMiB * 1.2) + 512);
    progress('filesystem', 'start', `mkfs.ext4 ${sizeMiB} MiB (${usedMiB} MiB used)`);
    await run(
      'mkfs.ext4',
      ['-q', '-F', '-L', 'kiln-root', '-d', rroot, join(tmp, 'rootfs.ext4'), `${sizeMiB}M`],
      {
        failCode: 'image_build_failed',
        signal: opts.signal,
      },
    );
    await unmountUnder(rroot);
    await rm(rroot, { recursive: true, force: true });
    await rm(iroot, { recursive: true, force: true });
    progress('filesystem', 'done', 'rootfs.ext4');
    checkAbort();

    // 6. manifest, then an atomic rename: from here on the image exists, complete.
    progress('finish', 'start', 'hashing and publishing');
    const files: ImageManifest['files'] = {
      kernel: await fileFacts(tmp, 'vmlinuz'),
      initrd: await fileFacts(tmp, 'initrd.img'),
      rootfs: await fileFacts(tmp, 'rootfs.ext4'),
    };
    for (const f of ['vmlinuz', 'initrd.img', 'rootfs.ext4']) await chmod(join(tmp, f), 0o444);
    const manifest: ImageManifest = {
      name: spec.name,
      key,
      builderVersion: BUILDER_VERSION,
      createdAt: new Date().toISOString(),
      kernel: { package: kernel.pkg, version: kernel.version, release: kver },
      spec: { ...spec, mirror },
      files,
    };
    await writeFileAtomic(join(tmp, 'manifest.json'), JSON.stringify(manifest, null, 2));
    await fsyncDir(tmp);
    if (opts.force) await rm(finalDir, { recursive: true, force: true });
    try {
      await rename(tmp, finalDir);
    } catch (e) {
      // Another build of the same key finished first: its image is identical, keep it.
      const code = (e as NodeJS.ErrnoException).code;
      if (
        (code !== 'ENOTEMPTY' && code !== 'EEXIST') ||
        !(await readManifest(finalDir).catch(() => undefined))
      )
        throw e;
      await rm(tmp, { recursive: true, force: true });
    }
    await fsyncDir(root);
    await pointName(root, spec.name, key);
    progress('finish', 'done', `image ${spec.name} = ${key}`);
    log.info({ key, elapsedMs: Date.now() - t0 }, 'image built');
    return { manifest, cached: false };
  } catch (e) {
    await unmountUnder(tmp).catch(() => undefined);
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    const err = asKilnError(e, 'image_build_failed');
    if (err.code === 'image_build_failed' && !err.message.startsWith(`${current}:`)) {
      throw new KilnError('image_build_failed', `${current}: ${err.message}`, { cause: err.cause ?? err });
    }
    throw err;
  }
}

async function fileFacts(dir: string, name: string): Promise<{ path: string; size: number; sha256: string }> {
  const p = join(dir, name);
  return { path: name, size: (await stat(p)).size, sha256: await sha256File(p) };
}

async function pointName(root: string, name: string, key: string): Promise<void> {
  await writeFileAtomic(join(root, 'by-name', `${name}.json`), JSON.stringify({ name, key }) + '\n');
}

async function preflight(cacheDir: string): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new KilnError(
      'permission_denied',
      'building an image needs root (debootstrap and chroot); run as root',
    );
  }
  const missing: string[] = [];
  for (const t of TOOLS) {
    const found = await run('sh', ['-c', 'command -v "$1"', 'sh', t]).then(
      () => true,
      () => false,
    );
    if (!found) missing.push(t);
  }
  if (!existsSync(BUSYBOX)) missing.push('busybox (static)');
  if (missing.length > 0) {
    throw new KilnError(
      'missing_tool',
      `missing host tools: ${missing.join(', ')} (./kiln installs them when run as root)`,
      {
        details: { tools: missing },
      },
    );
  }
  await mkdir(cacheDir, { recursive: true });
  const fs = await statfs(cacheDir);
  const freeMiB = Math.floor((fs.bavail * fs.bsize) / 2 ** 20);
  if (freeMiB < MIN_FREE_MIB) {
    throw new KilnError(
      'no_space',
      `only ${freeMiB} MiB free in ${cacheDir}; an image build needs ${MIN_FREE_MIB} MiB`,
    );
  }
}

/** Resolves a (meta-)package to the concrete kernel package and its candidate version. */
async function resolveKernel(pkg: string, signal?: AbortSignal): Promise<{ pkg: string; version: string }> {
  const lookup = async (): Promise<{ pkg: string; version: string } | undefined> => {
    let name = pkg;
    const deps = await run('apt-cache', ['depends', '--no-recommends', '--no-suggests', pkg], {
      signal,
    }).catch(() => undefined);
    const m = deps && /Depends:\s+(linux-image-\S+)/.exec(deps.stdout);
    if (m?.[1]) name = m[1];
    const pol = await run('apt-cache', ['policy', name], { signal }).catch(() => undefined);
    const v = pol && /Candidate:\s+(\S+)/.exec(pol.stdout);
    if (!v?.[1] || v[1] === '(none)') return undefined;
    return { pkg: name, version: v[1] };
  };
  let found = await lookup();
  if (!found) {
    await run('apt-get', ['update', '-qq'], { failCode: 'image_build_failed', signal });
    found = await lookup();
  }
  if (!found)
    throw new KilnError('image_build_failed', `kernel: no Debian package "${pkg}" is available to apt`);
  return found;
}

async function downloadDeb(pkg: string, version: string, dir: string, signal?: AbortSignal): Promise<string> {
  const name = `${pkg}_${version.replace(':', '%3a')}_amd64.deb`;
  if (existsSync(join(dir, name))) return join(dir, name);
  // Into a private directory first: a concurrent build must not take a half-written file.
  return downloadShared(dir, name, async (own) => {
    await run('apt-get', ['download', '-q', '-o', 'APT::Sandbox::User=root', `${pkg}=${version}`], {
      cwd: own,
      failCode: 'image_build_failed',
      signal,
    });
    if (!existsSync(join(own, name)))
      throw new KilnError('image_build_failed', `kernel: apt-get download did not produce ${name}`);
  });
}

interface ModuleRef {
  name: string;
  path: string;
}

/** Reads modules.dep and returns the wanted modules plus dependencies, dependencies first. */
export async function moduleLoadOrder(modDir: string, wanted: string[]): Promise<ModuleRef[]> {
  const dep = await readFile(join(modDir, 'modules.dep'), 'utf8');
  const norm = (n: string): string => n.replace(/-/g, '_');
  const modName = (p: string): string => basename(p).replace(/\.ko(\.(xz|zst|gz))?$/, '');
  const graph = new Map<string, { path: string; deps: string[] }>();
  for (const line of dep.split('\n')) {
    const [mod, rest] = line.split(':');
    if (!mod || rest === undefined) continue;
    graph.set(norm(modName(mod)), {
      path: mod,
      deps: rest
        .trim()
        .split(/\s+/)
        .filter(Boolean)
        .map((d) => norm(modName(d))),
    });
  }
  const out: ModuleRef[] = [];
  const seen = new Set<string>();
  const visit = (n: string): void => {
    if (seen.has(n)) return;
    seen.add(n);
    const node = graph.get(n);
    if (!node) return; // built into the kernel
    for (const d of [...node.deps].reverse()) visit(d);
    out.push({ name: modName(node.path), path: node.path });
  };
  for (const w of wanted) {
    if (!graph.has(norm(w))) {
      // Built-in modules are listed in modules.builtin; anything else is a typo.
      const builtin = await readFile(join(modDir, 'modules.builtin'), 'utf8').catch(() => '');
      if (!builtin.split('\n').some((l) => norm(modName(l)) === norm(w))) {
        throw new KilnError(
          'image_build_failed',
          `initramfs: kernel module "${w}" does not exist in this kernel`,
        );
      }
    }
    visit(norm(w));
  }
  return out;
}

async function installModule(src: string, dst: string, signal?: AbortSignal): Promise<void> {
  if (src.endsWith('.ko')) {
    await copyFile(src, dst);
    return;
  }
  const tool = src.endsWith('.xz') ? 'xz' : src.endsWith('.zst') ? 'zstd' : 'gzip';
  await run('sh', ['-c', `${tool} -dc "$1" > "$2"`, 'sh', src, dst], {
    failCode: 'image_build_failed',
    signal,
  });
}

async function customise(
  root: string,
  o: { kilnInit: string; agent: string; nodeBinary: string; signal?: AbortSignal | undefined },
): Promise<void> {
  const chroot = (...args: string[]): Promise<unknown> =>
    run('chroot', [root, ...args], { failCode: 'image_build_failed', signal: o.signal });
  await chroot(
    '/usr/sbin/useradd',
    '--create-home',
    '--uid',
    '1000',
    '--user-group',
    '--groups',
    'sudo',
    '--shell',
    '/bin/bash',
    'user',
  );
  await writeFile(join(root, 'etc/sudoers.d/90-kiln-user'), 'user ALL=(ALL:ALL) NOPASSWD: ALL\n', {
    mode: 0o440,
  });
  await writeFile(join(root, 'etc/hostname'), 'kiln\n');
  await writeFile(
    join(root, 'etc/hosts'),
    '127.0.0.1\tlocalhost\n127.0.1.1\tkiln\n::1\tlocalhost ip6-localhost ip6-loopback\n',
  );
  await rm(join(root, 'etc/resolv.conf'), { force: true });
  await writeFile(join(root, 'etc/resolv.conf'), 'nameserver 10.0.2.3\n');
  await writeFile(join(root, 'sbin/kiln-init'), o.kilnInit, { mode: 0o755 });
  await mkdir(join(root, 'opt/kiln'), { recursive: true });
  await writeFile(join(root, 'opt/kiln/agent.mjs'), o.agent, { mode: 0o644 });
  await mkdir(join(root, 'opt/kiln/bin'), { recursive: true });
  await copyFile(o.nodeBinary, join(root, 'opt/kiln/bin/node'));
  await chmod(join(root, 'opt/kiln/bin/node'), 0o755);
  await symlink('/opt/kiln/bin/node', join(root, 'usr/local/bin/node'));
  // Every command runs as `bash -l`; Debian's /etc/profile forks `id -u` each time, which costs
  // tens of ms under TCG. bash knows its EUID; other shells still fall back to `id -u`.
  const profile = await readFile(join(root, 'etc/profile'), 'utf8').catch(() => undefined);
  if (profile !== undefined)
    await writeFile(join(root, 'etc/profile'), profile.replace('"$(id -u)"', '"${EUID:-$(id -u)}"'));
  // Leave no downloaded packages or apt lists in the image.
  for (const d of ['var/cache/apt/archives', 'var/lib/apt/lists']) {
    for (const f of await readdir(join(root, d)).catch(() => [] as string[])) {
      if (f.endsWith('.deb') || (d.endsWith('lists') && f !== 'partial' && f !== 'lock'))
        await rm(join(root, d, f), { force: true });
    }
  }
}

async function detectMirror(): Promise<string> {
  const texts: string[] = [];
  for (const f of ['/etc/apt/sources.list']) texts.push(await readFile(f, 'utf8').catch(() => ''));
  for (const f of await readdir('/etc/apt/sources.list.d').catch(() => [] as string[])) {
    texts.push(await readFile(join('/etc/apt/sources.list.d', f), 'utf8').catch(() => ''));
  }
  for (const t of texts) {
    const m =
      /^(?:URIs:|deb)\s+(https?:\/\/\S+\/debian)\/?\s*$/m.exec(t) ??
      /^deb\s+(https?:\/\/\S+\/debian)\/?\s+bookworm\s/m.exec(t);
    if (m?.[1]) return m[1];
  }
  return 'http://deb.debian.org/debian';
}

/** Unmounts (lazily) everything mounted at or below `dir`, deepest first. */
export async function unmountUnder(dir: string): Promise<void> {
  const info = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const points = info
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => p !== undefined && (p === dir || p.startsWith(dir + '/')))
    .sort((a, b) => b.length - a.length);
  for (const p of points) await run('umount', ['-l', p]).catch(() => undefined);
}

/** Removes `.tmp-*` build directories whose builder process is gone (an interrupted build). */
async function removeStaleBuilds(root: string, log: Logger): Promise<void> {
  for (const f of await readdir(root).catch(() => [] as string[])) {
    const m = /^\.tmp-[0-9a-f]+-(\d+)$/.exec(f);
    if (!m?.[1]) continue;
    const pid = Number(m[1]);
    // A live builder's (this process's included: builds of other images may run here too).
    if (pidAlive(pid)) continue;
    log.info({ dir: f }, 'removing an interrupted build');
    await unmountUnder(join(root, f));
    await rm(join(root, f), { recursive: true, force: true });
  }
}
