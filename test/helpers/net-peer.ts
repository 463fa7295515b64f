/**
 * A test host on the far side of the host's routing: a network namespace of the test's own with a
 * veth to the host, on a documentation address (198.51.100.0/24, which kiln's always-denied set
 * does not cover), running an HTTP server. Sandboxes reach it as they would reach the internet.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';

export interface NetPeer {
  ns: string;
  /** The peer's address and the host end's (a host-local address). */
  addr: string;
  hostAddr: string;
  /** The HTTP port the peer serves on (80: python3 -m http.server). */
  httpPort: number;
  close(): Promise<void>;
}

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A /29 of 198.51.100.0/24 no interface of this host has an address in. */
function freeSubnet(): number {
  const used = execFileSync('ip', ['-4', '-o', 'addr', 'show'], { encoding: 'utf8' });
  for (let i = 0; i < 64; i++) {
    const n = randomInt(0, 32) * 8;
    if (!new RegExp(`198\\.51\\.100\\.(${n + 1}|${n + 2})/`).test(used)) return n;
  }
  throw new Error('no free /29 in 198.51.100.0/24');
}

export async function startNetPeer(): Promise<NetPeer> {
  const tag = `${process.pid % 100000}${randomInt(0, 100)}`;
  const ns = `kiln-testpeer-${tag}`;
  const hostIf = `ktp${tag}`.slice(0, 15);
  const n = freeSubnet();
  const hostAddr = `198.51.100.${n + 1}`;
  const addr = `198.51.100.${n + 2}`;
  ip('netns', 'add', ns);
  let server: ChildProcess | undefined;
  const close = (): Promise<void> => {
    server?.kill('SIGKILL');
    try {
      ip('link', 'del', hostIf);
    } catch {
      // gone with the namespace
    }
    try {
      ip('netns', 'del', ns);
    } catch {
      // already gone
    }
    return Promise.resolve();
  };
  try {
    ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    ip('addr', 'add', `${hostAddr}/29`, 'dev', hostIf);
    ip('link', 'set', hostIf, 'up');
    ip('-n', ns, 'addr', 'add', `${addr}/29`, 'dev', 'eth0');
    ip('-n', ns, 'link', 'set', 'eth0', 'up');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    ip('-n', ns, 'route', 'add', 'default', 'via', hostAddr);
    const httpPort = 80;
    server = spawn(
      'nsenter',
      [`--net=/run/netns/${ns}`, '/usr/bin/python3', '-m', 'http.server', String(httpPort), '--bind', addr],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
        cwd: '/tmp',
      },
    );
    let err = '';
    server.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    for (let i = 0; ; i++) {
      await new Promise((r) => setTimeout(r, 200));
      try {
        execFileSync(
          'nsenter',
          [`--net=/run/netns/${ns}`, 'bash', '-c', `echo > /dev/tcp/${addr}/${httpPort}`],
          {
            stdio: 'ignore',
          },
        );
        break;
      } catch {
        if (i > 50) throw new Error(`the peer HTTP server did not start: ${err}`);
      }
    }
    return { ns, addr, hostAddr, httpPort, close };
  } catch (e) {
    await close();
    throw e;
  }
}

/**
 * The Python program a guest runs to try TCP connections: prints, per `host:port`, whether it
 * connected (`open`), was refused (`refused`) or timed out (`timeout`), and in how many ms.
 */
export const PROBE = `
import json, socket, sys, time
out = {}
for t in sys.argv[1:]:
    h, p = t.rsplit(':', 1)
    s = socket.socket(socket.AF_INET6 if ':' in h else socket.AF_INET)
    s.settimeout(8)
    t0 = time.time()
    try:
        s.connect((h, int(p)))
        r = 'open'
    except socket.timeout:
        r = 'timeout'
    except OSError:
        r = 'refused'
    s.close()
    out[t] = [r, round((time.time() - t0) * 1000)]
print(json.dumps(out))
`;

/** What PROBE prints: per `host:port`, its outcome and the milliseconds it took. */
export type Probe = Record<string, [string, number]>;

/** Every target refused, each within 2 s (a rule that drops instead would time out). */
export function assertRefused(p: Probe, targets: string[]): void {
  for (const t of targets) {
    const [r, ms] = p[t] ?? ['missing', 0];
    assert.equal(r, 'refused', `${t}: ${r} after ${ms} ms (${JSON.stringify(p)})`);
    assert.ok(ms < 2000, `${t} refused after ${ms} ms`);
  }
}
