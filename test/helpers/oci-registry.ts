/**
 * A real local OCI registry for tests: Debian's `docker-registry` (distribution v2) on
 * 127.0.0.1 with its own storage, fed with images made by `umoci` and copied with `skopeo`;
 * optionally private (htpasswd basic auth, the bcrypt file made by apache2-utils' `htpasswd`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { chmod, copyFile, mkdir, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { ociImageName } from '../../src/api/oci-templates.ts';
import { run } from '../../src/core/exec.ts';
import { imagesDir } from '../../src/images/registry.ts';

export interface LocalRegistry {
  registry: string;
  close: () => Promise<void>;
}

/** The one user of a private registry. */
export interface RegistryUser {
  username: string;
  password: string;
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/**
 * Starts docker-registry and resolves once `GET /v2/` answers (200, or 401 when `auth` makes it
 * private: htpasswd basic auth, every request needs the user). With `cacheDir`, `close` also
 * removes the image names kilnd pointed there at this registry's images (`oci-127-0-0-1-<port>-…`:
 * the port is new each run, so they would pile up in a shared cache; the images stay, keyed by
 * content).
 */
export async function startRegistry(
  dir: string,
  o: { auth?: RegistryUser; cacheDir?: string } = {},
): Promise<LocalRegistry> {
  const port = await freePort();
  const config = join(dir, 'registry.yml');
  let auth = '';
  if (o.auth) {
    const file = join(dir, 'htpasswd');
    const { stdout } = await run('htpasswd', ['-Bbn', o.auth.username, o.auth.password]);
    await writeFile(file, stdout);
    auth = `auth:\n  htpasswd:\n    realm: kiln-test\n    path: ${file}\n`;
  }
  await writeFile(
    config,
    `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'storage')}\nhttp:\n  addr: 127.0.0.1:${port}\n${auth}`,
  );
  const child: ChildProcess = spawn('docker-registry', ['serve', config], { stdio: 'ignore' });
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (c) => {
      reject(new Error(`docker-registry exited (${c})`));
    }),
  );
  exited.catch(() => undefined);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ok = await fetch(`http://127.0.0.1:${port}/v2/`).then(
      (r) => r.status === (o.auth ? 401 : 200),
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill();
      throw new Error('docker-registry did not answer GET /v2/ within 30 s');
    }
    await Promise.race([new Promise((r) => setTimeout(r, 100)), exited]);
  }
  return {
    registry: `127.0.0.1:${port}`,
    close: async () => {
      if (child.exitCode === null) {
        child.kill();
        await new Promise((r) => child.once('exit', r));
      }
      if (o.cacheDir === undefined) return;
      const byName = join(imagesDir(o.cacheDir), 'by-name');
      const prefix = ociImageName(`127.0.0.1:${port}/`);
      for (const f of await readdir(byName).catch(() => [] as string[]))
        if (f.startsWith(prefix)) await rm(join(byName, f), { force: true });
    },
  };
}

/**
 * Debian packages for a tiny bash-capable root filesystem (from kiln's .deb cache, else apt,
 * downloaded into `workDir`, the test's own directory).
 */
async function debs(cacheDir: string, names: string[], workDir: string): Promise<string[]> {
  const shared = join(cacheDir, 'debs', 'debootstrap');
  const have = existsSync(shared) ? readdirSync(shared) : [];
  const out: string[] = [];
  const dl = join(workDir, 'debs');
  await mkdir(dl, { recursive: true });
  for (const n of names) {
    const f = have.find((x) => x.startsWith(`${n}_`) && x.endsWith('_amd64.deb'));
    if (f) {
      out.push(join(shared, f));
      continue;
    }
    await run('apt-get', ['download', '-q', '-o', 'APT::Sandbox::User=root', n], { cwd: dl });
    const got = readdirSync(dl).find((x) => x.startsWith(`${n}_`));
    if (!got) throw new Error(`apt-get download ${n} produced nothing`);
    out.push(join(dl, got));
  }
  return out;
}

/**
 * Makes a two-layer OCI image with umoci and pushes it (gzip, and zstd under `<tag>-zstd`):
 * layer 1 is bash + libc + busybox tools, /etc/passwd with root only, /etc/doomed; layer 2
 * removes /etc/doomed (a whiteout) and adds /srv/app/marker. Config: ENV, WORKDIR, CMD. Pushed
 * as `user` to a private registry.
 */
export async function pushTestImage(
  dir: string,
  registry: string,
  cacheDir: string,
  repoTag: string,
  user?: RegistryUser,
): Promise<void> {
  const layout = join(dir, 'layout');
  const bundle = join(dir, 'bundle');
  const rootfs = join(bundle, 'rootfs');
  await run('umoci', ['init', '--layout', layout]);
  await run('umoci', ['new', '--image', `${layout}:t`]);
  await run('umoci', ['unpack', '--image', `${layout}:t`, bundle]);
  for (const deb of await debs(cacheDir, ['libc6', 'libtinfo6', 'bash'], dir))
    await run('dpkg-deb', ['-x', deb, rootfs]);
  await copyFile('/bin/busybox', join(rootfs, 'bin/busybox'));
  await chmod(join(rootfs, 'bin/busybox'), 0o755);
  for (const t of ['sh', 'cat', 'ls', 'id', 'date', 'test', 'echo', 'mkdir', 'rm', 'stat'])
    await symlink('busybox', join(rootfs, 'bin', t));
  await mkdir(join(rootfs, 'etc'), { recursive: true });
  await writeFile(join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/bash\n');
  await writeFile(join(rootfs, 'etc/group'), 'root:x:0:\n');
  await writeFile(join(rootfs, 'etc/doomed'), 'lower layer\n');
  await run('umoci', ['repack', '--image', `${layout}:t`, bundle]);
  // The second layer from a fresh unpack of the first (umoci's way to stack layers).
  const bundle2 = join(dir, 'bundle2');
  const rootfs2 = join(bundle2, 'rootfs');
  await run('umoci', ['unpack', '--image', `${layout}:t`, bundle2]);
  await rm(join(rootfs2, 'etc/doomed'));
  await mkdir(join(rootfs2, 'srv/app'), { recursive: true });
  await writeFile(join(rootfs2, 'srv/app/marker'), 'from the OCI image\n');
  await run('umoci', ['repack', '--image', `${layout}:t`, bundle2]);
  await run('umoci', [
    'config',
    '--image',
    `${layout}:t`,
    '--config.env',
    'GREETING=hello',
    '--config.workingdir',
    '/srv/app',
    '--config.cmd',
    'cat',
    '--config.cmd',
    '/srv/app/marker',
  ]);
  const dest = `docker://${registry}/${repoTag}`;
  // skopeo keeps compressed layers as they are, and reuses a blob the registry already has:
  // decompress the layers first, push them as zstd, then the gzip original.
  const plain = join(dir, 'plain');
  await run('skopeo', ['copy', '--dest-decompress', `oci:${layout}:t`, `dir:${plain}`]);
  const zstd = ['--dest-compress-format', 'zstd', `dir:${plain}`, `${dest}-zstd`];
  const creds = user ? ['--dest-creds', `${user.username}:${user.password}`] : [];
  await run('skopeo', ['copy', '--dest-tls-verify=false', ...creds, ...zstd]);
  await run('skopeo', ['copy', '--dest-tls-verify=false', ...creds, `oci:${layout}:t`, dest]);
}

/**
 * Pushes a one-layer image holding `files` (path -> content) plus a busybox `sh` under
 * `repoTag`, signed in as `user` for a private registry. Quick: no packages.
 */
export async function pushTinyImage(
  dir: string,
  registry: string,
  repoTag: string,
  files: Record<string, string>,
  user?: RegistryUser,
): Promise<void> {
  const layout = join(dir, 'tiny-layout');
  const bundle = join(dir, 'tiny-bundle');
  const rootfs = join(bundle, 'rootfs');
  await run('umoci', ['init', '--layout', layout]);
  await run('umoci', ['new', '--image', `${layout}:t`]);
  await run('umoci', ['unpack', '--image', `${layout}:t`, bundle]);
  await mkdir(join(rootfs, 'bin'), { recursive: true });
  await copyFile('/bin/busybox', join(rootfs, 'bin/busybox'));
  await chmod(join(rootfs, 'bin/busybox'), 0o755);
  await symlink('busybox', join(rootfs, 'bin/sh'));
  for (const [path, content] of Object.entries(files)) {
    await mkdir(join(rootfs, path, '..'), { recursive: true });
    await writeFile(join(rootfs, path), content);
  }
  await run('umoci', ['repack', '--image', `${layout}:t`, bundle]);
  const creds = user ? ['--dest-creds', `${user.username}:${user.password}`] : [];
  await run('skopeo', [
    'copy',
    '--dest-tls-verify=false',
    ...creds,
    `oci:${layout}:t`,
    `docker://${registry}/${repoTag}`,
  ]);
  await rm(bundle, { recursive: true, force: true });
  await rm(layout, { recursive: true, force: true });
}
