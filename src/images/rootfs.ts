import { chmod, copyFile, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../core/exec.ts';

/** debootstrap's stage lines worth reporting (not each of its ~200 packages). */
const STAGE_LINE =
  /^I: (Retrieving|Validating|Extracting|Unpacking|Configuring) (?!(required|base) packages)/;

/** Installs a minimal Debian (`debootstrap --variant=minbase`) with the packages into `root`. */
export async function debootstrap(
  root: string,
  o: {
    suite: string;
    packages: string[];
    mirror: string;
    /** debootstrap's package cache (it writes into it in place: a build's own, see build.ts). */
    cacheDir: string;
    onStage: (line: string) => void;
    signal?: AbortSignal | undefined;
  },
): Promise<void> {
  await mkdir(o.cacheDir, { recursive: true });
  await run(
    'debootstrap',
    [
      '--variant=minbase',
      `--include=${[...o.packages].sort().join(',')}`,
      `--cache-dir=${o.cacheDir}`,
      o.suite,
      root,
      o.mirror,
    ],
    {
      failCode: 'image_build_failed',
      signal: o.signal,
      onLine: (l) => {
        if (l.startsWith('I: ') && !STAGE_LINE.test(l)) o.onStage(l.slice(3));
      },
    },
  );
}

/**
 * Makes a debootstrapped tree a kiln guest: user `user` (uid 1000, passwordless sudo), hostname,
 * DNS, `/sbin/kiln-init`, the agent and its Node runtime; no apt caches left behind.
 */
export async function customise(
  root: string,
  o: { kilnInit: string; agent: string; nodeBinary: string; signal?: AbortSignal | undefined },
): Promise<void> {
  const user = ['--create-home', '--uid', '1000', '--user-group', '--groups', 'sudo', '--shell', '/bin/bash'];
  await run('chroot', [root, '/usr/sbin/useradd', ...user, 'user'], {
    failCode: 'image_build_failed',
    signal: o.signal,
  });
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
  await installAgent(root, o.agent, o.nodeBinary);
  await speedUpProfile(root);
  await removeAptCaches(root);
}

async function installAgent(root: string, agent: string, nodeBinary: string): Promise<void> {
  await mkdir(join(root, 'opt/kiln'), { recursive: true });
  await writeFile(join(root, 'opt/kiln/agent.mjs'), agent, { mode: 0o644 });
  await mkdir(join(root, 'opt/kiln/bin'), { recursive: true });
  await copyFile(nodeBinary, join(root, 'opt/kiln/bin/node'));
  await chmod(join(root, 'opt/kiln/bin/node'), 0o755);
  await symlink('/opt/kiln/bin/node', join(root, 'usr/local/bin/node'));
}

/**
 * Every command runs as `bash -l`; Debian's /etc/profile forks `id -u` each time, which costs
 * tens of ms under TCG. bash knows its EUID; other shells still fall back to `id -u`.
 */
async function speedUpProfile(root: string): Promise<void> {
  const profile = await readFile(join(root, 'etc/profile'), 'utf8').catch(() => undefined);
  if (profile !== undefined)
    await writeFile(join(root, 'etc/profile'), profile.replace('"$(id -u)"', '"${EUID:-$(id -u)}"'));
}

/** Leaves no downloaded packages or apt lists in the image. */
async function removeAptCaches(root: string): Promise<void> {
  for (const d of ['var/cache/apt/archives', 'var/lib/apt/lists']) {
    for (const f of await readdir(join(root, d)).catch(() => [] as string[])) {
      if (f.endsWith('.deb') || (d.endsWith('lists') && f !== 'partial' && f !== 'lock'))
        await rm(join(root, d, f), { force: true });
    }
  }
}

/** The ext4 size for a tree: its use plus 20% and 512 MiB of room, at least `minMiB`. */
export async function filesystemSize(
  root: string,
  minMiB: number,
): Promise<{ usedMiB: number; sizeMiB: number }> {
  const { stdout } = await run('du', ['-sm', '-x', root], { failCode: 'image_build_failed' });
  const usedMiB = Number(stdout.split(/\s/)[0]);
  return { usedMiB, sizeMiB: Math.max(minMiB, Math.ceil(usedMiB * 1.2) + 512) };
}

/** Writes the tree into a sparse ext4 file (`mkfs.ext4 -d`), labelled kiln-root. */
export async function makeExt4(
  root: string,
  out: string,
  sizeMiB: number,
  signal?: AbortSignal,
): Promise<void> {
  await run('mkfs.ext4', ['-q', '-F', '-L', 'kiln-root', '-d', root, out, `${sizeMiB}M`], {
    failCode: 'image_build_failed',
    signal,
  });
}
