/**
 * Makes an unpacked OCI root filesystem a kiln guest. The image is untrusted: every path written
 * or read here is resolved inside the root (layer.ts `resolveInRoot`), so a symlinked /etc, /sbin
 * or /opt in the image cannot make the build touch the host. kiln brings its own runtime under
 * /opt/kiln (static busybox and catatonit, Node with the host's C library and loader), so the image
 * needs no particular libc, shell or tools to boot and answer; E2B SDK commands run
 * `/bin/bash -l -c`, so those need bash in the image.
 */
import { createHash } from 'node:crypto';
import { chmod, chown, copyFile, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { KilnError } from '../../core/errors.ts';
import { run } from '../../core/exec.ts';
import { BUSYBOX } from '../preflight.ts';
import { mkdirAll, resolveInRoot } from './layer.ts';

/** A host file copied into the guest under /opt/kiln. */
export interface RuntimeFile {
  /** Path in the guest, relative to its root. */
  guestPath: string;
  hostPath: string;
  mode: number;
}

/** PID 1 (reaps orphans), static: it runs before and beside the image's own libraries. */
const INIT_STATIC = '/usr/bin/catatonit';
const SETPRIV = '/usr/bin/setpriv';
/** Where an image without setpriv gets kiln's (on the agent's default PATH). */
const SETPRIV_WRAPPER = `#!/opt/kiln/bin/busybox sh\n# kiln: this image has no setpriv; the guest agent needs one to run commands as a user.\nexec /opt/kiln/lib/ld-linux-x86-64.so.2 --library-path /opt/kiln/lib /opt/kiln/lib/setpriv "$@"\n`;
/** Libraries Node may load at run time (name service) besides those it links. */
const EXTRA_LIBS = ['libnss_files.so.2', 'libnss_dns.so.2', 'libresolv.so.2'];

/** The shared libraries `bin` links (and its loader), by `ldd`. */
async function linkedLibs(bin: string): Promise<string[]> {
  const { stdout } = await run('ldd', [bin], { failCode: 'image_build_failed' });
  const libs: string[] = [];
  for (const line of stdout.split('\n')) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S*ld-linux\S*)/.exec(line);
    if (m?.[1]) libs.push(m[1]);
  }
  if (!libs.some((l) => basename(l) === 'ld-linux-x86-64.so.2'))
    throw new KilnError(
      'image_build_failed',
      `customise: cannot find the loader of ${bin} (ldd said: ${stdout.trim()})`,
    );
  return libs;
}

const exists = (p: string): Promise<boolean> =>
  stat(p).then(
    () => true,
    () => false,
  );

/**
 * The files kiln's guest runtime is made of: Node, setpriv (the agent runs commands as other
 * users with it) and the libraries both link, busybox, catatonit.
 */
export async function runtimeFiles(nodeBinary: string): Promise<RuntimeFile[]> {
  const libs = new Set([...(await linkedLibs(nodeBinary)), ...(await linkedLibs(SETPRIV))]);
  const libDir =
    [...libs].map((l) => dirname(l)).find((d) => d.includes('x86_64-linux-gnu')) ?? '/lib/x86_64-linux-gnu';
  for (const extra of EXTRA_LIBS) if (await exists(join(libDir, extra))) libs.add(join(libDir, extra));
  if (!(await exists(INIT_STATIC)))
    throw new KilnError('missing_tool', `missing host tool: ${INIT_STATIC} (Debian package catatonit)`);
  return [
    { guestPath: 'opt/kiln/bin/node', hostPath: nodeBinary, mode: 0o755 },
    { guestPath: 'opt/kiln/bin/busybox', hostPath: BUSYBOX, mode: 0o755 },
    { guestPath: 'opt/kiln/bin/catatonit', hostPath: INIT_STATIC, mode: 0o755 },
    { guestPath: 'opt/kiln/lib/setpriv', hostPath: SETPRIV, mode: 0o755 },
    ...[...libs].sort().map((l) => ({ guestPath: `opt/kiln/lib/${basename(l)}`, hostPath: l, mode: 0o755 })),
  ];
}

/** SHA-256 over the runtime files' guest paths and contents (an image-key input). */
export async function runtimeDigest(files: RuntimeFile[]): Promise<string> {
  const h = createHash('sha256');
  for (const f of files) h.update(`${f.guestPath}\0`).update(await readFile(f.hostPath));
  return h.digest('hex');
}

/** The host path for `rel` in the guest root, its parent directories made; whatever is there removed. */
async function placeFor(root: string, rel: string): Promise<string> {
  const parent = resolveInRoot(root, dirname(rel), true);
  mkdirAll(parent);
  const dest = join(parent, basename(rel));
  await rm(dest, { recursive: true, force: true });
  return dest;
}

async function writeIn(root: string, rel: string, data: string, mode = 0o644): Promise<void> {
  const dest = await placeFor(root, rel);
  await writeFile(dest, data, { mode, flag: 'wx' });
  await chmod(dest, mode); // whatever the process's umask
}

const readIn = (root: string, rel: string): Promise<string | undefined> =>
  readFile(resolveInRoot(root, rel, true), 'utf8').catch(() => undefined);

const existsIn = (root: string, rel: string): Promise<boolean> => exists(resolveInRoot(root, rel, true));

const lineFor = (text: string | undefined, name: string): string | undefined =>
  (text ?? '').split('\n').find((l) => l.split(':')[0] === name);

const appendLine = (text: string | undefined, line: string): string =>
  `${text === undefined || text === '' || text.endsWith('\n') ? (text ?? '') : `${text}\n`}${line}\n`;

/**
 * Adds user `user` (uid 1000, home /home/user, passwordless sudo where the image has sudo) when
 * the image has no user of that name. A uid 1000 already taken by another name is shared (as
 * `useradd -o` would): the image's files owned by it stay usable by `user`. Returns whether it
 * added the user.
 */
export async function ensureUser(root: string): Promise<boolean> {
  const passwd = await readIn(root, 'etc/passwd');
  if (lineFor(passwd, 'user')) return false;
  const hasBash = await existsIn(root, 'bin/bash');
  const shell = hasBash ? '/bin/bash' : '/bin/sh';
  await writeIn(root, 'etc/passwd', appendLine(passwd, `user:x:1000:1000:kiln user:/home/user:${shell}`));
  let group = await readIn(root, 'etc/group');
  if (!lineFor(group, 'user')) group = appendLine(group, 'user:x:1000:');
  const sudo = lineFor(group, 'sudo');
  if (sudo) group = (group ?? '').replace(sudo, `${sudo}${sudo.endsWith(':') ? '' : ','}user`);
  await writeIn(root, 'etc/group', group ?? '');
  const shadow = await readIn(root, 'etc/shadow');
  if (shadow !== undefined && !lineFor(shadow, 'user'))
    await writeIn(root, 'etc/shadow', appendLine(shadow, 'user:*:19000:0:99999:7:::'), 0o640);
  // /home made here is 0755 (every user passes through it); the home itself 0750.
  mkdirAll(resolveInRoot(root, 'home', true));
  const home = resolveInRoot(root, 'home/user', true);
  mkdirAll(home, 0o750);
  await chown(home, 1000, 1000);
  const sudoers = await existsIn(root, 'usr/bin/sudo');
  if (sudoers) await writeIn(root, 'etc/sudoers.d/90-kiln-user', 'user ALL=(ALL:ALL) NOPASSWD: ALL\n', 0o440);
  return true;
}

/**
 * Installs kiln's init, agent and runtime into the unpacked image at `root`, the guest's network
 * names, the mount points init needs, and user `user`.
 */
export async function guestify(
  root: string,
  o: { kilnInit: string; agent: string; runtime: RuntimeFile[] },
): Promise<{ userAdded: boolean }> {
  for (const d of ['proc', 'sys', 'dev', 'run', 'tmp', 'root']) {
    const p = resolveInRoot(root, d, true);
    const made = !(await exists(p));
    mkdirAll(p, d === 'tmp' ? 0o1777 : 0o755);
    if (made && d === 'root') await chmod(p, 0o700);
  }
  for (const f of o.runtime) {
    const dest = await placeFor(root, f.guestPath);
    await copyFile(f.hostPath, dest);
    await chmod(dest, f.mode);
  }
  await writeIn(root, 'opt/kiln/agent.mjs', o.agent);
  await writeIn(root, 'sbin/kiln-init', o.kilnInit, 0o755);
  await writeIn(root, 'etc/hostname', 'kiln\n');
  await writeIn(
    root,
    'etc/hosts',
    '127.0.0.1\tlocalhost\n127.0.1.1\tkiln\n::1\tlocalhost ip6-localhost ip6-loopback\n',
  );
  await writeIn(root, 'etc/resolv.conf', 'nameserver 10.0.2.3\n');
  let hasSetpriv = false;
  for (const d of ['usr/local/sbin', 'usr/local/bin', 'usr/sbin', 'usr/bin', 'sbin', 'bin'])
    hasSetpriv ||= await existsIn(root, `${d}/setpriv`);
  if (!hasSetpriv) await writeIn(root, 'usr/local/sbin/setpriv', SETPRIV_WRAPPER, 0o755);
  return { userAdded: await ensureUser(root) };
}
