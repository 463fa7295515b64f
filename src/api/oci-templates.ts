/**
 * The parent template of a build `fromImage(ref)` (e2b SDK) or Dockerfile `FROM host:port/name`:
 * the OCI image made a kiln image (images/oci, in a child process; cached by digest) and a
 * template booted from it, named `kiln-img-<image key>` so later builds of the same image find
 * it. It is kiln's own (every key may build on it) and hidden from template lists.
 *
 * A private image's cache is no way around its registry: every build resolves the reference
 * against the registry with its own credentials (the child's first step) before a cached image
 * or template is reused, so a build without them (or with wrong ones) fails there. For the same
 * reason concurrent builds share one pull only when their credentials are the same.
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { DEFAULT_MEMORY_MIB, DEFAULT_VCPUS } from '../core/defaults.ts';
import type { RegistryLogin } from '../core/registry-login.ts';
import { IMAGE_TEMPLATE_PREFIX } from '../core/template-steps.ts';
import type { SandboxService } from '../daemon/sandbox-service.ts';
import { buildImageFromOciInChild } from '../images/oci/build-oci-child.ts';
import { imageByKey } from '../images/registry.ts';

export type ImageTemplateMaker = (reference: string, opId: string, login?: RegistryLogin) => Promise<string>;

/** Which in-flight pull a build may join: the reference and a hash of its credentials (in memory). */
function flightKey(reference: string, login: RegistryLogin | undefined): string {
  if (!login) return `${reference}\0-`;
  const h = createHash('sha256').update(login.username).update('\0').update(login.password);
  return `${reference}\0${h.digest('hex')}`;
}

/** The image name (`images/by-name/<name>.json`) kilnd gives the image built from `reference`. */
export const ociImageName = (reference: string): string =>
  `oci-${reference
    .replace(/[^a-z0-9]+/gi, '-')
    .toLowerCase()
    .slice(0, 60)}`;

export function ociTemplateMaker(
  o: { cacheDir: string; debCacheDir?: string | undefined },
  svc: SandboxService,
  log: Logger,
): ImageTemplateMaker {
  const inFlight = new Map<string, Promise<string>>();
  const booting = new Map<string, Promise<string>>();
  const boot = async (name: string, key: string, opId: string): Promise<string> => {
    const existing = svc.templates().find((t) => t.name === name);
    if (existing && svc.templateReady(existing)) return name;
    const img = await imageByKey(o.cacheDir, key);
    await svc.buildTemplate(
      name,
      { key: img.key, kernel: img.kernel, initrd: img.initrd, rootfs: img.rootfs },
      { memoryMiB: DEFAULT_MEMORY_MIB, vcpus: DEFAULT_VCPUS },
      { opId },
    );
    return name;
  };
  const make = async (reference: string, opId: string, login: RegistryLogin | undefined): Promise<string> => {
    log.info(
      { opId, reference, credentials: login !== undefined },
      'building the kiln image of an OCI image',
    );
    const r = await buildImageFromOciInChild({
      reference,
      name: ociImageName(reference),
      cacheDir: o.cacheDir,
      debCacheDir: o.debCacheDir,
      ...(login ? { credentials: login } : {}),
    });
    const name = `${IMAGE_TEMPLATE_PREFIX}${r.manifest.key.slice(0, 32)}`;
    // Pulls of one image with other credentials may end here together: one boot per image.
    const p = booting.get(name) ?? boot(name, r.manifest.key, opId).finally(() => booting.delete(name));
    booting.set(name, p);
    return p;
  };
  // One build per reference and credentials at a time: concurrent template builds of one image share it.
  return (reference, opId, login) => {
    const k = flightKey(reference, login);
    const p = inFlight.get(k) ?? make(reference, opId, login).finally(() => inFlight.delete(k));
    inFlight.set(k, p);
    return p;
  };
}
