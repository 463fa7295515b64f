/**
 * The volume gateway: one TCP listener per mount index (the namespaces redirect a guest's
 * `VOLUME_GUEST_ADDR:VOLUME_GUEST_PORT + i` to listener `i` on their slot's host address). A
 * connection is served only if its source address is a sandbox slot whose sandbox mounts a volume
 * at index `i`; then kilnd spawns OpenSSH's `sftp-server` for it, confined by bubblewrap (only that
 * volume's directory, at /vol, is writable; no network; an unprivileged uid; it dies with kilnd),
 * and pipes the socket to it. Anything else is closed at once. The guest mounts it with
 * `sshfs -o directport`, which speaks SFTP straight over the TCP connection.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, chown, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';

export const SFTP_SERVER = '/usr/lib/openssh/sftp-server';

/** Who owns the volumes' files and runs their sftp-servers. */
export interface VolumeOwner {
  uid: number;
  gid: number;
}

export interface GatewayOpts {
  /** Listeners (mount indexes). */
  count: number;
  /** The volume directory a connection from `address` to index `index` may use, if any. */
  resolve: (address: string, index: number) => string | undefined;
  owner: VolumeOwner;
  /** Where the confined servers' passwd and group files are written. */
  etcDir: string;
  log: Logger;
  /** Listen address (default every address: the host table admits sandbox links only). */
  host?: string;
}

/**
 * bubblewrap's arguments for one confined sftp-server on volume directory `dir`. As root (kilnd's
 * usual case) bwrap sets up the mounts itself, without a user namespace, and `setpriv` then drops
 * to the volume owner with no capabilities at all (the state dir is 0700 root, so the owner could
 * not reach the directory to bind it); otherwise bwrap runs unprivileged in a user namespace.
 */
export function bwrapArgs(dir: string, etcDir: string, owner: VolumeOwner, asRoot: boolean): string[] {
  const unshare = asRoot
    ? ['--unshare-ipc', '--unshare-pid', '--unshare-net', '--unshare-uts', '--unshare-cgroup-try']
    : ['--unshare-all'];
  const drop = asRoot
    ? [
        '/usr/bin/setpriv',
        `--reuid=${owner.uid}`,
        `--regid=${owner.gid}`,
        '--clear-groups',
        '--inh-caps=-all',
        '--bounding-set=-all',
        '--no-new-privs',
      ]
    : [];
  // prettier-ignore
  return [
    ...unshare,
    '--die-with-parent',
    '--new-session',
    '--clearenv',
    '--ro-bind', '/usr', '/usr',
    '--tmpfs', '/usr/local',
    '--symlink', 'usr/lib', '/lib',
    '--symlink', 'usr/lib64', '/lib64',
    '--symlink', 'usr/bin', '/bin',
    '--proc', '/proc',
    '--dev', '/dev',
    // bwrap makes missing directories with kilnd's umask (077): the owner could not read /etc.
    '--perms', '0755', '--dir', '/etc',
    '--ro-bind', join(etcDir, 'passwd'), '/etc/passwd',
    '--ro-bind', join(etcDir, 'group'), '/etc/group',
    '--bind', dir, '/vol',
    '--chdir', '/vol',
    ...drop,
    SFTP_SERVER, '-d', '/vol', '-u', '0022',
  ];
}

export class VolumeGateway {
  readonly #o: GatewayOpts;
  readonly #servers: Server[] = [];
  readonly #children = new Set<ChildProcess>();
  readonly #sockets = new Set<Socket>();

  private constructor(o: GatewayOpts) {
    this.#o = o;
  }

  /** Starts the listeners; `ports()` then says where. */
  static async start(o: GatewayOpts): Promise<VolumeGateway> {
    const g = new VolumeGateway(o);
    // sftp-server looks its uid up; the confined one sees only this entry.
    const etc = {
      passwd: `kilnvol:x:${o.owner.uid}:${o.owner.gid}::/vol:/usr/sbin/nologin\n`,
      group: `kilnvol:x:${o.owner.gid}:\n`,
    };
    for (const [name, text] of Object.entries(etc)) {
      // Readable by the owner the servers run as, by no one else (nothing in the state dir is).
      await rm(join(o.etcDir, name), { force: true });
      await writeFile(join(o.etcDir, name), text, { mode: 0o400 });
      await chmod(join(o.etcDir, name), 0o400);
      if (process.getuid?.() === 0) await chown(join(o.etcDir, name), o.owner.uid, o.owner.gid);
    }
    try {
      for (let i = 0; i < o.count; i++) {
        const s = createServer((sock) => {
          g.#serve(sock, i);
        });
        await new Promise<void>((res, rej) => {
          s.once('error', rej);
          s.listen(0, o.host ?? '0.0.0.0', () => {
            s.off('error', rej);
            res();
          });
        });
        g.#servers.push(s);
      }
    } catch (e) {
      await g.close();
      throw e;
    }
    return g;
  }

  /** The listeners' ports, by mount index. */
  ports(): number[] {
    return this.#servers.map((s) => {
      const a = s.address();
      return typeof a === 'object' && a ? a.port : 0;
    });
  }

  /** Live confined servers (tests). */
  get serving(): number {
    return this.#children.size;
  }

  #serve(sock: Socket, index: number): void {
    const addr = (sock.remoteAddress ?? '').replace(/^::ffff:/, '');
    const dir = this.#o.resolve(addr, index);
    if (!dir) {
      this.#o.log.warn(
        { from: addr, index },
        'volume connection refused: no volume mounted there by that sandbox',
      );
      sock.destroy();
      return;
    }
    const asRoot = process.getuid?.() === 0;
    const child = spawn('bwrap', bwrapArgs(dir, this.#o.etcDir, this.#o.owner, asRoot), {
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    this.#children.add(child);
    this.#sockets.add(sock);
    const end = (): void => {
      sock.destroy();
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    };
    child.on('error', (e) => {
      this.#o.log.warn({ err: e }, 'volume server could not start (is bubblewrap installed?)');
      end();
    });
    child.on('exit', () => {
      this.#children.delete(child);
      end();
    });
    sock.on('close', () => {
      this.#sockets.delete(sock);
      end();
    });
    sock.on('error', end);
    child.stdin.on('error', end);
    sock.pipe(child.stdin);
    child.stdout.pipe(sock);
  }

  /** Stops listening and ends every connection and confined server. */
  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    for (const c of this.#children) c.kill('SIGKILL');
    await Promise.all(
      this.#servers.map(
        (s) =>
          new Promise<void>((res) => {
            s.close(() => {
              res();
            });
          }),
      ),
    );
  }
}
