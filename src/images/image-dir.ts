import { randomBytes } from 'node:crypto';
import { chmod, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { run } from '../core/exec.ts';
import { fsyncDir, writeFileAtomic } from '../core/fs-atomic.ts';
import { pidAlive } from '../core/proc.ts';
import { sha256File } from './image-key.ts';
import { readManifest, type ImageFile, type ImageManifest } from './registry.ts';

/** The files of an image directory, as the manifest names them. */
const IMAGE_FILES = { kernel: 'vmlinuz', initrd: 'initrd.img', rootfs: 'rootfs.ext4' } as const;

/**
 * Where one build of `key` assembles its image (see `publishImage`): unique to the build, so two
 * builds of one key, in two processes or in one, never share (or remove) each other's work.
 */
export const workDirFor = (root: string, key: string): string =>
  join(root, `.tmp-${key}-${process.pid}-${randomBytes(4).toString('hex')}`);

/**
 * Publishes the image assembled in `workDir`: hashes its files (made read-only), writes
 * `manifest.json` last, then renames the directory to `<root>/<key>` in one step, so a present
 * manifest means a complete image. A concurrent build of the same key that published first wins
 * (its image is identical) and this one's directory is dropped. Finally points the name at the key.
 */
export async function publishImage(
  root: string,
  workDir: string,
  m: Omit<ImageManifest, 'files' | 'createdAt'>,
  o: { replace: boolean },
): Promise<ImageManifest> {
  const manifest: ImageManifest = {
    ...m,
    createdAt: new Date().toISOString(),
    files: await fileFacts(workDir),
  };
  await writeFileAtomic(join(workDir, 'manifest.json'), JSON.stringify(manifest, null, 2));
  await fsyncDir(workDir);
  const finalDir = join(root, m.key);
  if (o.replace) await rm(finalDir, { recursive: true, force: true });
  try {
    await rename(workDir, finalDir);
  } catch (e) {
    // rename(2) onto a non-empty directory fails: another build of the same key finished first.
    const code = (e as NodeJS.ErrnoException).code;
    if ((code !== 'ENOTEMPTY' && code !== 'EEXIST') || !(await readManifest(finalDir).catch(() => undefined)))
      throw e;
    await rm(workDir, { recursive: true, force: true });
  }
  await fsyncDir(root);
  await pointName(root, m.name, m.key);
  return manifest;
}

async function fileFacts(dir: string): Promise<ImageManifest['files']> {
  const facts = async (name: string): Promise<ImageFile> => {
    const p = join(dir, name);
    await chmod(p, 0o444);
    return { path: name, size: (await stat(p)).size, sha256: await sha256File(p) };
  };
  return {
    kernel: await facts(IMAGE_FILES.kernel),
    initrd: await facts(IMAGE_FILES.initrd),
    rootfs: await facts(IMAGE_FILES.rootfs),
  };
}

/** Points `by-name/<name>.json` at an image key (atomically). */
export async function pointName(root: string, name: string, key: string): Promise<void> {
  await writeFileAtomic(join(root, 'by-name', `${name}.json`), JSON.stringify({ name, key }) + '\n');
}

/** Removes a build's work directory after unmounting whatever debootstrap left mounted in it. */
export async function discardWorkDir(dir: string): Promise<void> {
  await unmountUnder(dir);
  await rm(dir, { recursive: true, force: true });
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
export async function removeStaleBuilds(root: string, log: Logger): Promise<void> {
  for (const f of await readdir(root).catch(() => [] as string[])) {
    const m = /^\.tmp-[0-9a-f]+-(\d+)(?:-[0-9a-f]+)?$/.exec(f);
    if (!m?.[1]) continue;
    // A live builder's (this process's included: builds of other images may run here too).
    if (pidAlive(Number(m[1]))) continue;
    log.info({ dir: f }, 'removing an interrupted build');
    await discardWorkDir(join(root, f));
  }
}
