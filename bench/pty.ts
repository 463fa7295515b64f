/**
 * bench/pty: against one guest, the time from `sandbox.pty.create()` (the real `e2b` SDK) to the
 * terminal's first output byte (the login shell's prompt), beside, timed inside the guest with no
 * agent or network in the way: the same login shell in a pseudo-terminal under util-linux
 * `script` (the bare floor), and a unary call's round trip through the same SDK client and agent
 * (the transit any call pays: first byte >= round trip + the shell's start), as a session of
 * kiln's persistent PTY server (the agent's path: a
 * connection, a request, the server forks; timed on a server already running, as the agent's
 * is), and under the one-shot PTY helper (`python3 -u -I -S`: the agent's fallback when the
 * server is gone, and every PTY's path before the server).
 *
 *   scripts/node bench/pty.ts [--runs N] [--vcpus N] [--json]
 */
import type { Sandbox } from 'e2b';
import { benchArgs, percentile } from './stats.ts';
import { PTY_HELPER } from '../src/guest/pty-helper.ts';
import { FRAME, PTY_SERVER, type PtyRequest } from '../src/guest/pty-server.ts';
import { bootAgentVm } from '../test/helpers/guest.ts';

const { runs, vcpus, json } = benchArgs({ runs: 10, vcpus: 1 });

/**
 * In the guest: p50 of start -> first byte of the terminal's output, for each command line given
 * (spawned), and for a session of a PTY server (started here first, then warmed by one session).
 */
const IN_GUEST = String.raw`
import json, os, socket, struct, subprocess, sys, time
cmds, session, n = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
F = session['frames']

def spawned(argv):
    t = time.perf_counter()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    os.read(p.stdout.fileno(), 1)
    ms = (time.perf_counter() - t) * 1000
    os.killpg(p.pid, 9)
    p.wait()
    return ms

def recv_exactly(s, n):
    b = b''
    while len(b) < n:
        d = s.recv(n - len(b))
        if not d:
            raise EOFError('the PTY server closed the session')
        b += d
    return b

def recv_frame(s):
    t, n = struct.unpack('>BI', recv_exactly(s, 5))
    return t, recv_exactly(s, n)

def served(sock, req):
    t = time.perf_counter()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock)
    s.sendall(json.dumps(req).encode() + b'\n')
    typ, body = recv_frame(s)
    assert typ == F['pid'], body
    pid = struct.unpack('>I', body)[0]
    while recv_frame(s)[0] != F['output']:
        pass
    ms = (time.perf_counter() - t) * 1000
    os.killpg(pid, 9)
    while recv_frame(s)[0] != F['exit']:
        pass
    s.close()
    return ms

def p50(f):
    xs = sorted(f() for _ in range(n))
    return xs[len(xs) // 2]

out = {name: p50(lambda: spawned(argv)) for name, argv in cmds.items()}
sock = '/run/kiln-pty-bench.sock'
srv = subprocess.Popen(['python3', '-u', '-I', '-S', '/tmp/kiln-pty-server.py', sock], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
srv.stdout.readline()
served(sock, session['request'])
out['server'] = p50(lambda: served(sock, session['request']))
srv.stdin.close()
srv.wait()
print(json.dumps(out))
`;

/** `pty.create` -> the first output byte, in ms; the time to the start event goes to `started`. */
async function ptyFirstByte(sbx: Sandbox, started: number[]): Promise<number> {
  let resolve: () => void = () => undefined;
  const got = new Promise<void>((r) => (resolve = r));
  const t0 = performance.now();
  const h = await sbx.pty.create({
    cols: 80,
    rows: 24,
    onData: () => {
      resolve();
    },
    timeoutMs: 60_000,
  });
  started.push(performance.now() - t0);
  await got;
  const ms = performance.now() - t0;
  await sbx.pty.kill(h.pid);
  await h.wait().catch(() => undefined);
  return ms;
}

/** The in-guest timings (IN_GUEST), p50 in ms: the login shell under `script`, the helper, the server. */
async function inGuest(sbx: Sandbox): Promise<Record<'script' | 'helper' | 'server', number>> {
  await sbx.files.write('/tmp/kiln-pty-helper.py', PTY_HELPER);
  await sbx.files.write('/tmp/kiln-pty-server.py', PTY_SERVER);
  await sbx.files.write('/tmp/kiln-pty-bench.py', IN_GUEST);
  // The user's login shell as the agent starts it: the user's HOME (its .bashrc), TERM, a PTY.
  const env = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: '/home/user',
    USER: 'user',
    LOGNAME: 'user',
    // What the SDK's pty.create adds to the command's environment.
    TERM: 'xterm-256color',
    LANG: 'C.UTF-8',
    LC_ALL: 'C.UTF-8',
  };
  const login = ['/bin/bash', '-i', '-l'];
  const shell = [
    'env',
    ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
    ...['setpriv', '--reuid=1000', '--regid=1000', '--init-groups', '--'],
    ...login,
  ];
  const cmds = {
    script: ['script', '-qfc', shell.join(' '), '/dev/null'],
    helper: ['python3', '-u', '-I', '-S', '/tmp/kiln-pty-helper.py', '80', '24', ...shell],
  };
  // The server switches user itself (initgroups, setgid, setuid), as the agent asks it to.
  const request: PtyRequest = {
    cols: 80,
    rows: 24,
    uid: 1000,
    gid: 1000,
    user: 'user',
    cwd: '/home/user',
    env,
    argv: login,
  };
  const session = { frames: FRAME, request };
  const r = await sbx.commands.run(
    `python3 /tmp/kiln-pty-bench.py '${JSON.stringify(cmds)}' '${JSON.stringify(session)}' ${Math.max(runs, 5)}`,
    { user: 'root', timeoutMs: 300_000, envs: { TERM: 'xterm-256color' } },
  );
  return JSON.parse(r.stdout) as Record<'script' | 'helper' | 'server', number>;
}

/**
 * The transit every call pays: a unary call of the same service through the same SDK client,
 * connection and agent (`commands.list`), in ms. A terminal's first byte needs the request in
 * and the output out, so its floor through any agent is this plus the shell's start in the guest.
 */
async function roundTrip(sbx: Sandbox): Promise<number> {
  const t0 = performance.now();
  await sbx.commands.list();
  return performance.now() - t0;
}

async function main(): Promise<void> {
  const vm = await bootAgentVm({ memoryMiB: 512, vcpus });
  const { sandbox: sbx, info } = vm;
  try {
    const started: number[] = [];
    const firstByte = (): Promise<number> => ptyFirstByte(sbx, started);
    await firstByte(); // warm: the agent's first PTY, the SDK's connection
    started.length = 0;
    const e2e: number[] = [];
    for (let i = 0; i < runs; i++) e2e.push(await firstByte());

    await roundTrip(sbx);
    const rtt: number[] = [];
    for (let i = 0; i < Math.max(runs, 10); i++) rtt.push(await roundTrip(sbx));

    const guest = await inGuest(sbx);
    const res = {
      bench: 'pty',
      accel: info.accel,
      vcpus,
      runs,
      e2eFirstByteP50Ms: +percentile(e2e, 50).toFixed(1),
      e2eFirstByteP99Ms: +percentile(e2e, 99).toFixed(1),
      e2eStartedP50Ms: +percentile(started, 50).toFixed(1),
      guestScriptP50Ms: +guest.script.toFixed(1),
      guestServerP50Ms: +guest.server.toFixed(1),
      guestHelperP50Ms: +guest.helper.toFixed(1),
      roundTripP50Ms: +percentile(rtt, 50).toFixed(1),
      kilnShareP50Ms: +(percentile(e2e, 50) - guest.script).toFixed(1),
      // What the PTY path adds beyond a call's transit and the bare shell's start (<= 0: nothing).
      ptyOverFloorP50Ms: +(percentile(e2e, 50) - percentile(rtt, 50) - guest.script).toFixed(1),
    };
    if (json) console.log(JSON.stringify(res));
    else {
      console.log(
        `bench/pty (${info.accel}, ${runs} runs, one guest of ${vcpus} vCPU): pty.create -> first output byte`,
      );
      console.log(
        `  e2b pty.create, first byte            p50 ${res.e2eFirstByteP50Ms} ms   p99 ${res.e2eFirstByteP99Ms} ms`,
      );
      console.log(`  e2b pty.create resolved (start event)  p50 ${res.e2eStartedP50Ms} ms`);
      console.log(`  in guest: login shell under script     p50 ${res.guestScriptP50Ms} ms   (the floor)`);
      console.log(
        `  in guest: a session of the PTY server  p50 ${res.guestServerP50Ms} ms   (the agent's path)`,
      );
      console.log(
        `  in guest: the one-shot helper (-I -S)  p50 ${res.guestHelperP50Ms} ms   (the fallback; before the server)`,
      );
      console.log(
        `  a unary call's round trip (commands.list) p50 ${res.roundTripP50Ms} ms   (the transit any call pays)`,
      );
      console.log(`  => agent + SDK + network share         p50 ${res.kilnShareP50Ms} ms`);
      console.log(
        `  => beyond the round trip and script    p50 ${res.ptyOverFloorP50Ms} ms   (<= 0: the PTY path adds nothing)`,
      );
    }
  } finally {
    await vm.close();
  }
}

await main();
