import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { KilnError, asKilnError } from '../core/errors.ts';
import { nullLogger } from '../core/log.ts';
import { bundleAgent } from './agent-bundle.ts';
import { publishDebCache, seedDebCache } from './deb-cache.ts';
import { detectMirror, resolveKernel } from './host-apt.ts';
import { discardWorkDir, pointName, publishImage, removeStaleBuilds, workDirFor } from './image-dir.ts';
import { BUILDER_VERSION, imageKey, recipeDigest, sha256File, type ImageInputs } from './image-key.ts';
import { makeInitramfs } from './initramfs.ts';
import { unpackKernel } from './kernel.ts';
import { preflight } from './preflight.ts';
import { imagesDir, readManifest, type ImageManifest } from './registry.ts';
import { customise, debootstrap, filesystemSize, makeExt4 } from './rootfs.ts';
import { validateImageSpec, type ImageSpec } from './spec.ts';

// Re-exported for the tests that check built files against their manifest.
export { sha256File };

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

const guestFile = (name: string): string => fileURLToPath(new URL(`./guest-files/${name}`, import.meta.url));

/** Reports a build's progress and remembers its current step (for errors and cancellation). */
class StepReporter {
  current: BuildStep = 'preflight';
  readonly #t0 = Date.now();
  readonly #opts: Pick<BuildOpts, 'onProgress' | 'signal'>;
  constructor(opts: Pick<BuildOpts, 'onProgress' | 'signal'>) {
    this.#opts = opts;
  }

  get elapsedMs(): number {
    return Date.now() - this.#t0;
  }

  report(step: BuildStep, phase: BuildProgress['phase'], message: string): void {
    this.current = step;
    const index = STEPS.indexOf(step) + 1;
    this.#opts.onProgress?.({ step, index, total: STEPS.length, phase, message, elapsedMs: this.elapsedMs });
  }

  /** Reports a step's end, then stops the build if it was cancelled meanwhile. */
  done(step: BuildStep, message: string): void {
    this.report(step, 'done', message);
    if (this.#opts.signal?.aborted)
      throw new KilnError('cancelled', `image build cancelled during ${this.current}`);
  }
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
  const debCacheDir = opts.debCacheDir ?? join(opts.cacheDir, 'debs');
  const steps = new StepReporter(opts);

  steps.report('preflight', 'start', 'checking tools, permissions and space');
  await preflight(opts.cacheDir);
  await mkdir(root, { recursive: true });
  await mkdir(debCacheDir, { recursive: true });
  await removeStaleBuilds(root, log);
  const inputs = await gatherInputs(spec, opts.signal);
  const key = imageKey(inputs);
  if (!opts.force) {
    const cached = await readManifest(join(root, key)).catch(() => undefined);
    if (cached) {
      await pointName(root, spec.name, key);
      steps.report('preflight', 'done', `cached image ${key} is up to date`);
      return { manifest: { ...cached, name: spec.name }, cached: true };
    }
  }
  steps.report('preflight', 'done', `building image ${key}`);

  const workDir = workDirFor(root, key);
  await mkdir(workDir);
  try {
    const manifest = await assemble({ ...opts, spec }, { inputs, key, root, workDir, debCacheDir }, steps);
    log.info({ key, elapsedMs: steps.elapsedMs }, 'image built');
    return { manifest, cached: false };
  } catch (e) {
    await discardWorkDir(workDir).catch(() => undefined);
    const err = asKilnError(e, 'image_build_failed');
    if (err.code === 'image_build_failed' && !err.message.startsWith(`${steps.current}:`)) {
      throw new KilnError('image_build_failed', `${steps.current}: ${err.message}`, {
        cause: err.cause ?? err,
      });
    }
    throw err;
  }
}

/** Reads everything the image is made of (the key's inputs). */
async function gatherInputs(spec: ImageSpec, signal: AbortSignal | undefined): Promise<ImageInputs> {
  return {
    spec,
    kernel: await resolveKernel(spec.kernelPackage, signal),
    agent: await bundleAgent(),
    initramfsInit: await readFile(guestFile('initramfs-init.sh'), 'utf8'),
    kilnInit: await readFile(guestFile('kiln-init.sh'), 'utf8'),
    // The guest agent's runtime is this very Node (24 LTS, pinned by .node-version): bookworm's
    // nodejs is 18 and end of life, and one runtime for host and guest means one set of tests.
    node: { version: process.version, sha256: await sha256File(process.execPath) },
    recipe: await recipeDigest(),
  };
}

/** Runs the build steps in `workDir` and publishes the result under `key`. */
async function assemble(
  opts: BuildOpts,
  b: { inputs: ImageInputs; key: string; root: string; workDir: string; debCacheDir: string },
  steps: StepReporter,
): Promise<ImageManifest> {
  const { spec, kernel } = b.inputs;
  const { signal } = opts;
  steps.report('kernel', 'start', `${kernel.pkg} ${kernel.version}`);
  const unpacked = await unpackKernel(kernel, { workDir: b.workDir, debCacheDir: b.debCacheDir, signal });
  steps.done('kernel', `kernel ${unpacked.release}`);

  steps.report('initramfs', 'start', `busybox + modules ${spec.modules.join(', ')}`);
  const init = b.inputs.initramfsInit;
  const loaded = await makeInitramfs(unpacked, { workDir: b.workDir, modules: spec.modules, init, signal });
  await rm(unpacked.root, { recursive: true, force: true });
  steps.done('initramfs', `${loaded.length} modules: ${loaded.join(' ')}`);

  const mirror = spec.mirror ?? opts.mirror ?? (await detectMirror());
  steps.report('rootfs', 'start', `debootstrap ${spec.suite} from ${mirror} (about a minute)`);
  const rootfs = join(b.workDir, 'rootfs');
  // debootstrap writes into its cache dir in place: each build gets its own (links to the
  // shared one's files), and what it fetched is shared once it is done.
  const shared = join(b.debCacheDir, 'debootstrap');
  const cacheDir = join(b.workDir, 'debootstrap-cache');
  await seedDebCache(shared, cacheDir);
  const onStage = (l: string): void => {
    steps.report('rootfs', 'detail', l);
  };
  await debootstrap(rootfs, {
    suite: spec.suite,
    packages: spec.packages,
    mirror,
    cacheDir,
    onStage,
    signal,
  });
  await publishDebCache(cacheDir, shared);
  await rm(cacheDir, { recursive: true, force: true });
  steps.done('rootfs', 'debootstrap finished');

  steps.report('customise', 'start', 'user, sudo, init, guest agent');
  const { kilnInit, agent } = b.inputs;
  await customise(rootfs, { kilnInit, agent, nodeBinary: process.execPath, signal });
  steps.done('customise', 'user "user" (uid 1000, passwordless sudo), /sbin/kiln-init, /opt/kiln/agent.mjs');

  const { usedMiB, sizeMiB } = await filesystemSize(rootfs, spec.rootfsSizeMiB);
  steps.report('filesystem', 'start', `mkfs.ext4 ${sizeMiB} MiB (${usedMiB} MiB used)`);
  await makeExt4(rootfs, join(b.workDir, 'rootfs.ext4'), sizeMiB, signal);
  await discardWorkDir(rootfs);
  await rm(join(b.workDir, 'initramfs-root'), { recursive: true, force: true });
  steps.done('filesystem', 'rootfs.ext4');

  // From the rename on, the image exists, complete.
  steps.report('finish', 'start', 'hashing and publishing');
  const manifest = await publishImage(
    b.root,
    b.workDir,
    {
      name: spec.name,
      key: b.key,
      builderVersion: BUILDER_VERSION,
      kernel: { package: kernel.pkg, version: kernel.version, release: unpacked.release },
      spec: { ...spec, mirror },
    },
    { replace: opts.force === true },
  );
  steps.report('finish', 'done', `image ${spec.name} = ${b.key}`);
  return manifest;
}
