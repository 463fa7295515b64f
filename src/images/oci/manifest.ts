import { pullError } from './auth.ts';
import { DIGEST_RE } from './reference.ts';

export const MEDIA = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
} as const;

/** What a manifest request accepts, best first. */
export const MANIFEST_ACCEPT = [
  MEDIA.ociIndex,
  MEDIA.ociManifest,
  MEDIA.dockerList,
  MEDIA.dockerManifest,
].join(', ');

/** Layer compressions kiln unpacks, by layer media type. */
const LAYER_TYPES: Record<string, Compression> = {
  'application/vnd.oci.image.layer.v1.tar': 'none',
  'application/vnd.oci.image.layer.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd': 'zstd',
  'application/vnd.docker.image.rootfs.diff.tar.gzip': 'gzip',
  'application/vnd.docker.image.rootfs.diff.tar': 'none',
  'application/vnd.docker.image.rootfs.diff.tar.zstd': 'zstd',
};
export type Compression = 'none' | 'gzip' | 'zstd';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os?: string; architecture?: string; variant?: string };
}

export interface Layer extends Descriptor {
  compression: Compression;
}

export interface ImageManifestDoc {
  config: Descriptor;
  layers: Layer[];
}

/** The parts of an image's config kiln uses: the process defaults and the layers' diff ids. */
export interface OciImageConfig {
  env: string[];
  workdir: string | undefined;
  user: string | undefined;
  entrypoint: string[] | undefined;
  cmd: string[] | undefined;
  diffIds: string[];
}

const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

function jsonObject(body: string, what: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(body);
  } catch {
    throw pullError(`${what} is not JSON`);
  }
  if (!isObj(doc)) throw pullError(`${what} is not a JSON object`);
  return doc;
}

function descriptor(v: unknown, what: string): Descriptor {
  if (!isObj(v)) throw pullError(`${what} is not a descriptor object`);
  const { mediaType, digest, size, platform } = v;
  if (typeof digest !== 'string' || !DIGEST_RE.test(digest))
    throw pullError(`${what} has no sha256 digest (${JSON.stringify(digest)})`);
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0)
    throw pullError(`${what} has no valid size`);
  const d: Descriptor = { mediaType: typeof mediaType === 'string' ? mediaType : '', digest, size };
  if (isObj(platform)) d.platform = platform;
  return d;
}

/** A fetched manifest document: an index (to pick a platform from) or an image manifest. */
export type ManifestDoc =
  { kind: 'index'; manifests: Descriptor[] } | { kind: 'image'; image: ImageManifestDoc };

/** Parses a manifest body by its media type (the header's, else the body's own). */
export function parseManifest(body: string, headerType: string | undefined): ManifestDoc {
  const doc = jsonObject(body, 'the manifest');
  const type =
    (typeof doc.mediaType === 'string' && doc.mediaType) || (headerType ?? '').split(';')[0]?.trim() || '';
  if (doc.schemaVersion === 1 || type.startsWith('application/vnd.docker.distribution.manifest.v1'))
    throw pullError('Docker schema 1 manifests are not supported (re-push the image with a current tool)');
  if (type === MEDIA.ociIndex || type === MEDIA.dockerList || (type === '' && Array.isArray(doc.manifests))) {
    if (!Array.isArray(doc.manifests)) throw pullError('the image index has no manifests');
    return { kind: 'index', manifests: doc.manifests.map((m, i) => descriptor(m, `index entry ${i}`)) };
  }
  if (type !== MEDIA.ociManifest && type !== MEDIA.dockerManifest && type !== '')
    throw pullError(`unsupported manifest media type "${type}"`);
  if (!Array.isArray(doc.layers)) throw pullError('the image manifest has no layers list');
  const layers = doc.layers.map((l, i): Layer => {
    const d = descriptor(l, `layer ${i}`);
    const compression = LAYER_TYPES[d.mediaType];
    if (compression === undefined)
      throw pullError(
        `layer ${i} has the unsupported media type "${d.mediaType}" (foreign or unknown layers are refused)`,
      );
    return { ...d, compression };
  });
  return { kind: 'image', image: { config: descriptor(doc.config, 'the config'), layers } };
}

/** Picks linux/amd64 from an index (a variant-less entry first); names what exists otherwise. */
export function selectPlatform(
  manifests: Descriptor[],
  want = { os: 'linux', architecture: 'amd64' },
): Descriptor {
  const fits = manifests.filter(
    (m) => m.platform?.os === want.os && m.platform.architecture === want.architecture,
  );
  const pick = fits.find((m) => m.platform?.variant === undefined) ?? fits[0];
  if (pick) return pick;
  const have = manifests
    .map(
      (m) =>
        `${m.platform?.os ?? '?'}/${m.platform?.architecture ?? '?'}${m.platform?.variant ? `/${m.platform.variant}` : ''}`,
    )
    .join(', ');
  throw pullError(`the image has no ${want.os}/${want.architecture} variant (it has: ${have || 'none'})`);
}

const strings = (v: unknown): string[] | undefined =>
  Array.isArray(v) && v.every((s) => typeof s === 'string') ? v : undefined;

/** Reads the config blob: process defaults (`config.Env` …) and `rootfs.diff_ids`. */
export function parseConfig(body: string, layerCount: number): OciImageConfig {
  const doc = jsonObject(body, 'the image config');
  if (doc.os !== undefined && doc.os !== 'linux')
    throw pullError(`the image is for ${JSON.stringify(doc.os)}, not linux`);
  if (doc.architecture !== undefined && doc.architecture !== 'amd64')
    throw pullError(`the image is for ${JSON.stringify(doc.architecture)}, not amd64`);
  const c = isObj(doc.config) ? doc.config : {};
  const rootfs = isObj(doc.rootfs) ? doc.rootfs : {};
  const diffIds = strings(rootfs.diff_ids) ?? [];
  if (diffIds.length !== layerCount || !diffIds.every((d) => DIGEST_RE.test(d)))
    throw pullError(`the config lists ${diffIds.length} sha256 layer diff ids for ${layerCount} layers`);
  const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
  return {
    env: strings(c.Env) ?? [],
    workdir: str(c.WorkingDir),
    user: str(c.User),
    entrypoint: strings(c.Entrypoint),
    cmd: strings(c.Cmd),
    diffIds,
  };
}
