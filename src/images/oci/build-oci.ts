/**
 * Builds a kiln guest image from an OCI image: the registry's layers become the root filesystem,
 * kiln's kernel and initramfs (as for Debian images) boot it, and kiln's init, agent and runtime
 * are added (guestify.ts). Cached like every image by a content key; here the key's root-
 * filesystem input is the linux/amd64 manifest digest, so a moved tag rebuilds and an unchanged
 * one is found after a single manifest request.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { KilnError, asKilnError } from '../../core/errors.ts';
import { nullLogger } from '../../core/log.ts';
import { bundleAgent } from '../agent-bundle.ts';
import type { BuildProgress } from '../build.ts';
import { resolveKernel } from '../host-apt.ts';
import { discardWorkDir, pointName, publishImage, removeStaleBuilds, workDirFor } from '../image-dir.ts';
import { BUILDER_VERSION, sha256, sha256File } from '../image-key.ts';
import { makeInitramfs } from '../initramfs.ts';
import { unpackKernel } from '../kernel.ts';
import { preflight } from '../preflight.ts';
import { imagesDir, readManifest, type ImageManifest } from '../registry.ts';
import { filesystemSize, makeExt4 } from '../rootfs.ts';
import { defaultImageSpec, validateImageSpec } from '../spec.ts';
import type { RegistryCredentials } from './auth.ts';
import { guestify, runtimeDigest, runtimeFiles } from './guestify.ts';
import type { OciImageConfig } from './manifest.ts';
import { resolveOciImage, unpackOciImage, type ResolvedImage } from './pull.ts';
import { parseReference } from './reference.ts';

const STEPS = ['resolve', 'kernel', 'initramfs', 'layers', 'customise', 'filesystem', 'finish'] as const;
export type OciBuildStep = (typeof STEPS)[number];

/** Progress as `buildImage` reports it, with this build's steps. */
export type OciBuildProgress = Omit<BuildProgress, 'step'> & { step: OciBuildStep };

export interface OciBuildOpts {
  /** `host[:port]/name[:tag]` or `…@sha256:<hex>`. */
  reference: string;
  /** The image name pointed at the result (`images/by-name/<name>.json`). */
  name: string;
  /** Cache root: images under `<cacheDir>/images`, blobs under `<cacheDir>/oci/blobs`. */
  cacheDir: string;
  debCacheDir?: string | undefined;
  /** Registries (`host:port`) allowed over plain HTTP besides loopback ones. */
  insecureRegistries?: readonly string[] | undefined;
  credentials?: RegistryCredentials | undefined;
  onProgress?: ((p: OciBuildProgress) => void) | undefined;
  signal?: AbortSignal | undefined;
  log?: Logger | undefined;
  force?: boolean | undefined;
}

/** The OCI origin recorded in an image's manifest.json. */
export interface OciSource {
  reference: string;
  /** The linux/amd64 image manifest's digest. */
  digest: string;
  /** The image's ENV, WORKDIR, USER, ENTRYPOINT, CMD (and layer diff ids). */
  config: OciImageConfig;
}

export interface OciBuildResult {
  manifest: ImageManifest;
  cached: boolean;
  oci: OciSource;
}

const guestFile = (name: string): string => fileURLToPath(new URL(`../guest-files/${name}`, import.meta.url));
/** Modules whose code decides what goes into an OCI-based image (their contents are a key input). */
const RECIPE = ['build-oci.ts', 'guestify.ts', 'layer.ts', '../kernel.ts', '../initramfs.ts', '../rootfs.ts'];

async function recipe(): Promise<string> {
  const h = createHash('sha256');
  for (const f of RECIPE)
    h.update(`${f}\0`).update(await readFile(fileURLToPath(new URL(`./${f}`, import.meta.url))));
  return h.digest('hex');
}

/**
 * Builds (or finds in the cache) the kiln image of an OCI image and points `name` at it.
 * Returns the image's manifest and the OCI config defaults a template uses (env, workdir, user,
 * entrypoint + cmd as the start command).
 */
export async function buildImageFromOci(opts: OciBuildOpts): Promise<OciBuildResult> {
  parseReference(opts.reference); // bad input fails before anything else
  const spec = validateImageSpec(defaultImageSpec({ name: opts.name, packages: [] }));
  const log = (opts.log ?? nullLogger).child({ image: spec.name, from: opts.reference });
  const root = imagesDir(opts.cacheDir);
  const t0 = Date.now();
  let current: OciBuildStep = 'resolve';
  const report = (step: OciBuildStep, phase: OciBuildProgress['phase'], message: string): void => {
    current = step;
    opts.onProgress?.({
      step,
      index: STEPS.indexOf(step) + 1,
      total: STEPS.length,
      phase,
      message,
      elapsedMs: Date.now() - t0,
    });
    if (phase === 'done' && opts.signal?.aborted)
      throw new KilnError('cancelled', `image build cancelled during ${step}`);
  };
  report('resolve', 'start', `checking tools; resolving ${opts.reference}`);
  await preflight(opts.cacheDir);
  await mkdir(root, { recursive: true });
  await removeStaleBuilds(root, log);
  const pullOpts = {
    cacheDir: opts.cacheDir,
    insecure: opts.insecureRegistries,
    credentials: opts.credentials,
    signal: opts.signal,
  };
  const img = await resolveOciImage(opts.reference, {
    ...pullOpts,
    onProgress: (m) => {
      report('resolve', 'detail', m);
    },
  });
  const oci: OciSource = { reference: img.reference, digest: img.digest, config: img.config };
  const inputs = await gatherInputs(spec.kernelPackage, opts.signal);
  const key = sha256(
    JSON.stringify({
      builder: BUILDER_VERSION,
      kind: 'oci',
      digest: img.digest,
      spec: { modules: spec.modules, size: spec.rootfsSizeMiB },
      ...inputs.keyed,
    }),
  ).slice(0, 32);
  if (opts.force !== true) {
    const cached = await readManifest(join(root, key)).catch(() => undefined);
    if (cached) {
      await pointName(root, spec.name, key);
      report('resolve', 'done', `cached image ${key} is up to date (${img.digest})`);
      return { manifest: { ...cached, name: spec.name }, cached: true, oci };
    }
  }
  report('resolve', 'done', `${img.digest}: ${img.manifest.layers.length} layers; building image ${key}`);
  const workDir = workDirFor(root, key);
  await mkdir(workDir);
  try {
    const manifest = await assemble(opts, { img, inputs, key, root, workDir, spec, oci }, report);
    log.info({ key, elapsedMs: Date.now() - t0 }, 'image built from an OCI image');
    return { manifest, cached: false, oci };
  } catch (e) {
    await discardWorkDir(workDir).catch(() => undefined);
    const err = asKilnError(e, 'image_build_failed');
    if (err.code !== 'image_build_failed') throw err;
    throw new KilnError('image_build_failed', `${current}: ${err.message}`, { cause: err.cause ?? err });
  }
}

type Inputs = Awaited<ReturnType<typeof gatherInputs>>;

async function gatherInputs(kernelPackage: string, signal: AbortSignal | undefined) {
  const kernel = await resolveKernel(kernelPackage, signal);
  const agent = await bundleAgent();
  const initramfsInit = await readFile(guestFile('initramfs-init.sh'), 'utf8');
  const kilnInit = await readFile(guestFile('kiln-init-oci.sh'), 'utf8');
  const runtime = await runtimeFiles(process.execPath);
  const keyed = {
    kernel: `${kernel.pkg}=${kernel.version}`,
    files: { initramfsInit: sha256(initramfsInit), kilnInit: sha256(kilnInit), agent: sha256(agent) },
    node: { version: process.version, sha256: await sha256File(process.execPath) },
    runtime: await runtimeDigest(runtime),
    recipe: await recipe(),
  };
  return { kernel, agent, initramfsInit, kilnInit, runtime, keyed };
}

async function assemble(
  opts: OciBuildOpts,
  b: {
    img: ResolvedImage;
    inputs: Inputs;
    key: string;
    root: string;
    workDir: string;
    spec: ReturnType<typeof defaultImageSpec>;
    oci: OciSource;
  },
  report: (step: OciBuildStep, phase: OciBuildProgress['phase'], message: string) => void,
): Promise<ImageManifest> {
  const { signal } = opts;
  const { kernel } = b.inputs;
  report('kernel', 'start', `${kernel.pkg} ${kernel.version}`);
  const debCacheDir = opts.debCacheDir ?? join(opts.cacheDir, 'debs');
  await mkdir(debCacheDir, { recursive: true });
  const unpacked = await unpackKernel(kernel, { workDir: b.workDir, debCacheDir, signal });
  report('kernel', 'done', `kernel ${unpacked.release}`);
  report('initramfs', 'start', `busybox + modules ${b.spec.modules.join(', ')}`);
  const init = b.inputs.initramfsInit;
  const loaded = await makeInitramfs(unpacked, { workDir: b.workDir, modules: b.spec.modules, init, signal });
  await rm(unpacked.root, { recursive: true, force: true });
  report('initramfs', 'done', `${loaded.length} modules`);

  report('layers', 'start', `${b.img.manifest.layers.length} layers of ${b.img.reference}`);
  const rootfs = join(b.workDir, 'rootfs');
  await unpackOciImage(b.img, rootfs, {
    cacheDir: opts.cacheDir,
    signal,
    onProgress: (m) => {
      report('layers', 'detail', m);
    },
  });
  report('layers', 'done', 'root filesystem unpacked');

  report('customise', 'start', 'init, guest agent and its runtime, user');
  const { userAdded } = await guestify(rootfs, {
    kilnInit: b.inputs.kilnInit,
    agent: b.inputs.agent,
    runtime: b.inputs.runtime,
  });
  report(
    'customise',
    'done',
    `/sbin/kiln-init, /opt/kiln; user "user" ${userAdded ? 'added (uid 1000)' : 'kept from the image'}`,
  );

  const { usedMiB, sizeMiB } = await filesystemSize(rootfs, b.spec.rootfsSizeMiB);
  report('filesystem', 'start', `mkfs.ext4 ${sizeMiB} MiB (${usedMiB} MiB used)`);
  await makeExt4(rootfs, join(b.workDir, 'rootfs.ext4'), sizeMiB, signal);
  await discardWorkDir(rootfs);
  await rm(join(b.workDir, 'initramfs-root'), { recursive: true, force: true });
  report('filesystem', 'done', 'rootfs.ext4');

  report('finish', 'start', 'hashing and publishing');
  const manifest = await publishImage(
    b.root,
    b.workDir,
    {
      name: b.spec.name,
      key: b.key,
      builderVersion: BUILDER_VERSION,
      kernel: { package: kernel.pkg, version: kernel.version, release: unpacked.release },
      spec: b.spec,
      oci: b.oci,
    },
    { replace: opts.force === true },
  );
  report('finish', 'done', `image ${b.spec.name} = ${b.key}`);
  return manifest;
}
