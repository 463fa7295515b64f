import { createReadStream } from 'node:fs';
import { chmod, mkdir } from 'node:fs/promises';
import type { RegistryCredentials } from './auth.ts';
import { pullError } from './auth.ts';
import { RegistryClient } from './client.ts';
import { applyLayer, type LayerStats } from './layer.ts';
import {
  parseConfig,
  parseManifest,
  selectPlatform,
  type ImageManifestDoc,
  type OciImageConfig,
} from './manifest.ts';
import { formatReference, parseReference } from './reference.ts';

export interface PullOpts {
  /** Cache root: verified blobs go to `<cacheDir>/oci/blobs/sha256/<hex>`. */
  cacheDir: string;
  /** Registries (`host:port`) allowed over plain HTTP besides loopback ones. */
  insecure?: readonly string[] | undefined;
  credentials?: RegistryCredentials | undefined;
  onProgress?: ((message: string) => void) | undefined;
  signal?: AbortSignal | undefined;
}

/** An image resolved to one linux/amd64 manifest, its config read, its layers not yet fetched. */
export interface ResolvedImage {
  /** The reference as given, normalised. */
  reference: string;
  /** Digest of the linux/amd64 image manifest (what the image's content is keyed by). */
  digest: string;
  manifest: ImageManifestDoc;
  config: OciImageConfig;
  client: RegistryClient;
}

/** Resolves a reference: its manifest (through an index to linux/amd64) and its config. */
export async function resolveOciImage(ref: string, o: PullOpts): Promise<ResolvedImage> {
  const r = parseReference(ref);
  const client = new RegistryClient(r, o);
  let m = await client.manifest(r.digest ?? (r.tag as string));
  let doc = parseManifest(m.body, m.mediaType);
  if (doc.kind === 'index') {
    const pick = selectPlatform(doc.manifests);
    o.onProgress?.(`index: picked linux/amd64 ${pick.digest}`);
    m = await client.manifest(pick.digest);
    doc = parseManifest(m.body, m.mediaType);
    if (doc.kind !== 'image') throw pullError('the index points at another index, not an image manifest');
  }
  const config = parseConfig(await client.smallBlob(doc.image.config), doc.image.layers.length);
  return { reference: formatReference(r), digest: m.digest, manifest: doc.image, config, client };
}

const mib = (n: number): string => `${(n / 2 ** 20).toFixed(1)} MiB`;

/**
 * Fetches the layers of a resolved image into the blob cache (verified by digest) and unpacks
 * them, lowest first, onto `rootfs` (created if missing), whiteouts applied in order.
 */
export async function unpackOciImage(img: ResolvedImage, rootfs: string, o: PullOpts): Promise<LayerStats[]> {
  await mkdir(rootfs, { recursive: true });
  await chmod(rootfs, 0o755); // the guest's / (whatever the process's umask)
  const layers = img.manifest.layers;
  const stats: LayerStats[] = [];
  for (const [i, l] of layers.entries()) {
    const n = `layer ${i + 1}/${layers.length}`;
    o.onProgress?.(`${n}: fetching ${l.digest.slice(7, 19)} (${mib(l.size)}, ${l.compression})`);
    const path = await img.client.blob(l, o.cacheDir);
    const diffId = img.config.diffIds[i] as string;
    const s = await applyLayer(rootfs, createReadStream(path), {
      compression: l.compression,
      diffId,
      signal: o.signal,
    });
    stats.push(s);
    const skipped =
      s.skipped.length > 0 ? `, skipped ${s.skipped.length} (${s.skipped.slice(0, 3).join(', ')})` : '';
    o.onProgress?.(`${n}: extracted ${s.entries} entries, ${s.whiteouts} whiteouts${skipped}`);
  }
  return stats;
}
