/**
 * The parent template of a build `fromImage(ref)` (e2b SDK) or Dockerfile `FROM host:port/name`:
 * the OCI image made a kiln image (images/oci, in a child process; cached by digest) and a
 * template booted from it, named `kiln-img-<image key>` so later builds of the same image find
 * it. It is kiln's own (every key may build on it) and hidden from template lists.
 */
import type { Logger } from 'pino';
import { DEFAULT_MEMORY_MIB, DEFAULT_VCPUS } from '../core/defaults.ts';
import { IMAGE_TEMPLATE_PREFIX } from '../core/template-steps.ts';
import type { SandboxService } from '../daemon/sandbox-service.ts';
import { buildImageFromOciInChild } from '../images/oci/build-oci-child.ts';
import { imageByKey } from '../images/registry.ts';

export type ImageTemplateMaker = (reference: string, opId: string) => Promise<string>;

export function ociTemplateMaker(
  o: { cacheDir: string; debCacheDir?: string | undefined },
  svc: SandboxService,
  log: Logger,
): ImageTemplateMaker {
  const inFlight = new Map<string, Promise<string>>();
  const make = async (reference: string, opId: string): Promise<string> => {
    log.info({ opId, reference }, 'building the kiln image of an OCI image');
    const r = await buildImageFromOciInChild({
      reference,
      name: `oci-${reference
        .replace(/[^a-z0-9]+/gi, '-')
        .toLowerCase()
        .slice(0, 60)}`,
      cacheDir: o.cacheDir,
      debCacheDir: o.debCacheDir,
    });
    const name = `${IMAGE_TEMPLATE_PREFIX}${r.manifest.key.slice(0, 32)}`;
    const existing = svc.templates().find((t) => t.name === name);
    if (existing && svc.templateReady(existing)) return name;
    const img = await imageByKey(o.cacheDir, r.manifest.key);
    await svc.buildTemplate(
      name,
      { key: img.key, kernel: img.kernel, initrd: img.initrd, rootfs: img.rootfs },
      { memoryMiB: DEFAULT_MEMORY_MIB, vcpus: DEFAULT_VCPUS },
      { opId },
    );
    return name;
  };
  // One build per reference at a time: concurrent template builds of one image share it.
  return (reference, opId) => {
    const p = inFlight.get(reference) ?? make(reference, opId).finally(() => inFlight.delete(reference));
    inFlight.set(reference, p);
    return p;
  };
}
