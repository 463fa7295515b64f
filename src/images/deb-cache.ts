/**
 * The shared .deb download cache (`<cacheDir>/debs`, or KILN_DEB_CACHE_DIR) is used by image
 * builds that may run at the same time (two kilnds, two test runs, a CLI build). Nothing ever
 * writes into a file in it: a download lands in a private directory first and is published with
 * a link or rename, so a reader sees a complete file or none.
 */
import { copyFile, link, mkdir, mkdtemp, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';

/** Puts `src` at `dst` atomically; keeps what is already there (same name = same package). */
async function publish(src: string, dst: string): Promise<void> {
  try {
    await link(src, dst);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    if (code !== 'EXDEV') throw e;
    // Another filesystem: copy next to it, then rename (atomic within that filesystem).
    const tmp = `${dst}.tmp-${process.pid}`;
    await copyFile(src, tmp);
    await rename(tmp, dst);
  }
}

/**
 * Runs `fetch(dir)` with a new private directory and publishes the file `name` it leaves there
 * into `shared`; returns the shared path. The private directory is removed whatever happens.
 */
export async function downloadShared(
  shared: string,
  name: string,
  fetch: (dir: string) => Promise<void>,
): Promise<string> {
  await mkdir(shared, { recursive: true });
  const dir = await mkdtemp(join(shared, '.dl-'));
  try {
    await fetch(dir);
    await publish(join(dir, name), join(shared, name));
    return join(shared, name);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Links every .deb of `shared` into the private cache `own` (debootstrap validates each one it uses). */
export async function seedDebCache(shared: string, own: string): Promise<void> {
  await mkdir(own, { recursive: true });
  for (const f of await readdir(shared).catch(() => [] as string[])) {
    if (f.endsWith('.deb')) await publish(join(shared, f), join(own, f));
  }
}

/** Publishes the .debs a build fetched into its private cache `own` back to `shared`. */
export async function publishDebCache(own: string, shared: string): Promise<void> {
  await mkdir(shared, { recursive: true });
  for (const f of await readdir(own).catch(() => [] as string[])) {
    if (f.endsWith('.deb')) await publish(join(own, f), join(shared, f));
  }
}
