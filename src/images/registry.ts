import { readFile, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { KilnError } from '../core/errors.ts';
import { validateName } from '../core/validate.ts';
import type { OciSource } from './oci/build-oci.ts';
import type { ImageSpec } from './spec.ts';

export interface ImageFile {
  /** File name inside the image directory. */
  path: string;
  size: number;
  sha256: string;
}

/** `manifest.json` of a built image; written last, so its presence means the image is complete. */
export interface ImageManifest {
  name: string;
  key: string;
  builderVersion: number;
  createdAt: string;
  kernel: { package: string; version: string; release: string };
  spec: ImageSpec;
  files: { kernel: ImageFile; initrd: ImageFile; rootfs: ImageFile };
  /** Set when the root filesystem came from an OCI image (oci/build-oci.ts). */
  oci?: OciSource;
}

/** A built image with absolute paths, ready for a VmSpec. */
export interface Image {
  name: string;
  key: string;
  dir: string;
  kernel: string;
  initrd: string;
  rootfs: string;
  manifest: ImageManifest;
}

export const imagesDir = (cacheDir: string): string => join(cacheDir, 'images');

/** Reads and checks an image directory's manifest: every file present with its recorded size. */
export async function readManifest(dir: string): Promise<ImageManifest> {
  const m = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as ImageManifest;
  for (const f of Object.values(m.files)) {
    const st = await stat(join(dir, f.path));
    if (st.size !== f.size) throw new Error(`${f.path}: size ${st.size} != recorded ${f.size}`);
  }
  return m;
}

/** Finds the image a name points to; `not_found` with the command to build it otherwise. */
export async function resolveImage(cacheDir: string, name: string): Promise<Image> {
  validateName('image', name);
  const root = imagesDir(cacheDir);
  let key: string;
  try {
    key = (JSON.parse(await readFile(join(root, 'by-name', `${name}.json`), 'utf8')) as { key: string }).key;
  } catch {
    throw new KilnError(
      'not_found',
      `image "${name}" is not built; run: kiln image build${name === 'default' ? '' : ` --name ${name}`}`,
      {
        details: { image: name },
      },
    );
  }
  return loadImage(
    join(root, key),
    name,
    `image "${name}" (${key}) is incomplete or damaged; rebuild it with: kiln image build --force`,
  );
}

/** Reads an image directory into an Image; `not_found` with `missing` when it is absent or damaged. */
async function loadImage(dir: string, name: string | undefined, missing: string): Promise<Image> {
  let manifest: ImageManifest;
  try {
    manifest = await readManifest(dir);
  } catch (e) {
    throw new KilnError('not_found', missing, { cause: e });
  }
  return {
    name: name ?? manifest.name,
    key: basename(dir),
    dir,
    kernel: join(dir, manifest.files.kernel.path),
    initrd: join(dir, manifest.files.initrd.path),
    rootfs: join(dir, manifest.files.rootfs.path),
    manifest,
  };
}

/** The image built under `key` (what a template records), with absolute paths. */
export async function imageByKey(cacheDir: string, key: string): Promise<Image> {
  if (!/^[0-9a-f]{16,64}$/.test(key)) throw new KilnError('invalid_argument', `"${key}" is not an image key`);
  return loadImage(
    join(imagesDir(cacheDir), key),
    undefined,
    `image ${key} is missing or damaged; rebuild it with: kiln image build`,
  );
}
