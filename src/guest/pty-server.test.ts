/**
 * The persistent PTY server with real python3 and real pseudo-terminals (as root, on the host):
 * sessions straight through PtyServer, and through ProcessManager as the agent starts them,
 * including the one-shot helper it falls back to when the server is gone.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, unlink } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ProcessManager, type EndInfo, type ManagedProcess, type StartProcessOpts } from './processes.ts';
import { PtyServer, type PtyRequest, type PtySession } from './pty-client.ts';
import { FRAME, FrameReader, MAX_FRAME, MAX_REQUEST, encodeFrame } from './pty-server.ts';
import { lookupUser, type GuestUser } from './users.ts';

const PATH = '/usr/local/bin:/usr/bin:/bin';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, fn: () => T | undefined | false, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(20);
  }
}

/** /proc/<pid>/stat's state, parent, process group and session; undefined when gone. */
function procStat(pid: number): { state: string; ppid: number; pgrp: number; sid: number } | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const [state = '', ppid, pgrp, sid] = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { state, ppid: Number(ppid), pgrp: Number(pgrp), sid: Number(sid) };
}
/** Dead: gone, or a zombie (an orphan of this host's pid 1, which reaps nothing). */
const alive = (pid: number): boolean => {
  const s = procStat(pid);
  return s !== undefined && s.state !== 'Z';
};
const childrenOf = (ppid: number): number[] =>
  readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
    .filter((pid) => procStat(pid)?.ppid === ppid);

describe('the PTY server', { timeout: 120_000 }, () => {
  let base: string;
  let server: PtyServer;
  let pm: ProcessManager;
  let root: GuestUser;
  /** The server's log: empty until the server is made to fail (no PTY fell back before). */
  const logs: string[] = [];
  /** Every pid seen: servers, handlers, commands; none may be left at the end. */
  const seen = new Set<number>();
  const serverPid = (): number => {
    const pid = server.pid;
    assert.ok(pid, 'the server runs');
    seen.add(pid);
    return pid;
  };

  before(async () => {
    base = await mkdtemp(join(tmpdir(), 'kiln-ptys-'));
    server = new PtyServer({ dir: join(base, 'run'), log: (l) => logs.push(l) });
    pm = new ProcessManager(server);
    await server.start();
    serverPid();
    root = await lookupUser('root');
  });
  after(async () => {
    pm.killAll();
    server.stop();
    await rm(base, { recursive: true, force: true });
  });

  interface Run {
    s: PtySession;
    out: () => string;
    exit: Promise<[number | null, string | null]>;
  }
  const open = async (argv: string[], over: Partial<PtyRequest> = {}): Promise<Run> => {
    const req = { cols: 80, rows: 24, uid: 0, gid: 0, user: 'root', cwd: base, env: { PATH }, argv };
    const s = await server.open({ ...req, ...over });
    assert.ok(s, 'the server opened a session');
    seen.add(s.pid);
    const handler = procStat(s.pid)?.ppid;
    if (handler) seen.add(handler);
    let out = '';
    s.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exit = new Promise<[number | null, string | null]>((r) => {
      s.on('exit', (c, sig) => {
        r([c, sig]);
      });
    });
    return { s, out: () => out, exit };
  };
  const startOpts = (cmd: string, args: string[], o: Partial<StartProcessOpts> = {}): StartProcessOpts => ({
    config: { cmd, args, envs: {}, cwd: base },
    user: root,
    pty: { cols: 80, rows: 24 },
    stdin: false,
    timeoutMs: 0,
    baseEnv: {},
    workdir: undefined,
    ...o,
  });
  const watch = (p: ManagedProcess): { out: () => string; end: Promise<EndInfo> } => {
    seen.add(p.pid);
    let out = '';
    const end = new Promise<EndInfo>((resolve) => {
      p.on('event', (e) => {
        if (e.type === 'data') out += e.data.toString();
        else resolve(e.end);
      });
    });
    return { out: () => out, end };
  };

  it("first output at the requested size; the pid is the command's, leading its session and group", async () => {
    const r = await open(['sh', '-c', 'echo hi; stty size; echo "ids=$$ $(cut -d" " -f5,6 /proc/$$/stat)"'], {
      cols: 100,
      rows: 30,
    });
    assert.deepEqual(await r.exit, [0, null]);
    assert.match(r.out(), /^hi\r\n30 100\r\n/);
    assert.equal(
      /ids=(\d+) (\d+) (\d+)/.exec(r.out())?.slice(1).map(Number).join(),
      `${r.s.pid},${r.s.pid},${r.s.pid}`,
    );
  });

  it('input reaches the command, Ctrl-D ends it; its handler is a child of the server, reaped after', async () => {
    const r = await open(['cat']);
    const handler = procStat(r.s.pid)?.ppid ?? 0;
    assert.equal(procStat(handler)?.ppid, serverPid(), 'command -> handler -> server');
    r.s.stdin.write('hello kiln\n');
    await until('cat echoes', () => r.out().split('hello kiln').length === 3);
    r.s.stdin.write('\x04');
    assert.deepEqual(await r.exit, [0, null]);
    await until('the handler reaped', () => !procStat(handler));
    assert.deepEqual(childrenOf(serverPid()), [], 'no handler left, not even a zombie');
  });

  it('a resize changes the size a running shell sees', async () => {
    const r = await open(['sh'], { env: { PATH, PS1: '$ ' } });
    r.s.stdin.write('stty size\n');
    await until('24 80', () => /24 80/.test(r.out()));
    r.s.resize(120, 40);
    r.s.stdin.write('stty size\n');
    await until('40 120', () => /40 120/.test(r.out()));
    r.s.stdin.write('exit 0\n');
    assert.deepEqual(await r.exit, [0, null]);
  });

  it('exit codes and signal deaths reach ManagedProcess as a ChildProcess reports them', async () => {
    const three = watch(await pm.start(startOpts('sh', ['-c', 'exit 3'])));
    assert.deepEqual(await three.end, {
      exitCode: 3,
      exited: true,
      status: 'exit status 3',
      error: 'exit status 3',
    });
    const killed = watch(await pm.start(startOpts('sh', ['-c', 'kill -KILL $$'])));
    assert.deepEqual(await killed.end, {
      exitCode: -1,
      exited: false,
      status: 'signal: killed',
      error: 'signal: killed',
    });
    // signal() hits the whole group: the shell and its background job.
    const p = await pm.start(startOpts('sh', ['-c', 'sleep 100 & echo "bg=$!"; sleep 100']));
    const group = watch(p);
    const bg = Number(await until('bg pid', () => /bg=(\d+)/.exec(group.out())?.[1]));
    seen.add(bg);
    p.signal('SIGKILL');
    assert.equal((await group.end).status, 'signal: killed');
    await until('the background job killed', () => !alive(bg));
  });

  it('runs as another user with its initgroups groups, its HOME and USER', async () => {
    const users = ['nobody'];
    // A user with supplementary groups, where the host has one.
    for (const line of readFileSync('/etc/group', 'utf8').split('\n')) {
      const member = line.split(':')[3]?.split(',')[0];
      if (member && member !== 'root' && (await lookupUser(member).catch(() => undefined))) {
        users.push(member);
        break;
      }
    }
    for (const name of users) {
      const u = await lookupUser(name);
      const w = watch(
        await pm.start(
          startOpts('sh', ['-c', 'echo "$(id -u) $(id -g) [$(id -G)] $HOME $USER"'], { user: u }),
        ),
      );
      assert.equal((await w.end).exitCode, 0, w.out());
      const groups = execFileSync('id', ['-G', name], { encoding: 'utf8' }).trim();
      assert.equal(w.out().trim(), `${u.uid} ${u.gid} [${groups}] ${u.home} ${name}`);
    }
    assert.equal((await lookupUser('nobody')).uid, 65534);
    assert.deepEqual(logs, [], 'all through the server');
  });

  it("the environment is exactly the request's, cwd and umask as the agent's other commands get them", async () => {
    const sub = join(base, 'sub dir');
    await mkdir(sub);
    const r = await open(['env'], { env: { PATH, A: 'x y', EMPTY: '' }, cwd: sub });
    assert.deepEqual(await r.exit, [0, null]);
    assert.deepEqual(r.out().trim().split('\r\n').sort(), ['A=x y', 'EMPTY=', `PATH=${PATH}`]);
    const w = watch(
      await pm.start(
        startOpts('', [], {
          config: {
            cmd: 'sh',
            args: ['-c', 'echo "$TERM|$FOO|$(pwd)|$(umask)"; grep SigIgn /proc/self/status'],
            envs: { FOO: 'bar' },
            cwd: sub,
          },
        }),
      ),
    );
    await w.end;
    const umask = execFileSync('sh', ['-c', 'umask'], { encoding: 'utf8' }).trim();
    assert.match(w.out(), new RegExp(`^xterm-256color\\|bar\\|${sub}\\|${umask}\r\n`), "the agent's umask");
    assert.match(w.out(), /SigIgn:\s+0+\r\n/, 'no signal left ignored by Python');
  });

  it('a command that cannot start says why on the terminal and exits 127', async () => {
    const r = await open(['/nonexistent/cmd']);
    assert.deepEqual(await r.exit, [127, null]);
    assert.match(r.out(), /^kiln-pty: \/nonexistent\/cmd: .*No such file or directory/);
    const c = await open(['true'], { cwd: '/nonexistent-dir' });
    assert.deepEqual(await c.exit, [127, null]);
    assert.match(c.out(), /^kiln-pty: true: .*nonexistent-dir/);
  });

  it('five sessions at once stay apart', async () => {
    const runs = await Promise.all([0, 1, 2, 3, 4].map(() => open(['cat'])));
    runs.forEach((r, i) => r.s.stdin.write(`token-${i}\n`));
    for (const [i, r] of runs.entries()) {
      await until(`session ${i}`, () => r.out().includes(`token-${i}`));
      r.s.resize(50 + i, 20);
    }
    await sleep(100);
    for (const [i, r] of runs.entries()) {
      assert.equal(
        r
          .out()
          .match(/token-\d/g)
          ?.join(),
        `token-${i},token-${i}`,
      );
      r.s.stdin.write('\x04');
      assert.deepEqual(await r.exit, [0, null]);
    }
  });

  /**
   * A raw connection: sends `data` (then ends its side if `end`), collects frames until the
   * server closes it, or until `stopAt` says so (then drops the connection itself).
   */
  const raw = (
    data: Buffer | string,
    end?: 'end',
    stopAt: (f: { type: number }) => boolean = () => false,
  ): Promise<{ type: number; text: string; payload: Buffer }[]> =>
    new Promise((resolve, reject) => {
      const sock = createConnection(server.socketPath ?? '');
      const reader = new FrameReader();
      const frames: { type: number; text: string; payload: Buffer }[] = [];
      sock.on('data', (d: Buffer) => {
        reader.push(d);
        for (let f = reader.next(); f; f = reader.next()) {
          frames.push({ ...f, text: f.payload.toString() });
          if (stopAt(f)) sock.destroy();
        }
      });
      // A refused over-long request is closed with data unread: a reset, after the frames.
      sock.on('error', (e: NodeJS.ErrnoException) => {
        if (e.code !== 'ECONNRESET') reject(e);
      });
      sock.on('close', () => {
        resolve(frames);
      });
      sock.write(data);
      if (end) sock.end();
    });

  it('a malformed request gets an error frame, and the server serves the next one', async () => {
    const pid = serverPid();
    const good = { cols: 80, rows: 24, uid: 0, gid: 0, user: 'root', cwd: '/', env: {}, argv: ['true'] };
    const bad: [string | Buffer, RegExp][] = [
      ['not json\n', /not JSON/],
      ['[1, 2]\n', /JSON object/],
      ['{"deep": ' + '['.repeat(100_000) + '\n', /not JSON/],
      [JSON.stringify({ ...good, cols: '80' }) + '\n', /cols must be an integer/],
      [JSON.stringify({ ...good, rows: 70_000 }) + '\n', /rows must be an integer/],
      [JSON.stringify({ ...good, uid: -1 }) + '\n', /uid must be/],
      [JSON.stringify({ ...good, uid: true }) + '\n', /uid must be/],
      [JSON.stringify({ ...good, user: '' }) + '\n', /user must be a non-empty/],
      [JSON.stringify({ ...good, cwd: 'relative' }) + '\n', /cwd must be absolute/],
      [JSON.stringify({ ...good, env: [] }) + '\n', /env must be an object/],
      [JSON.stringify({ ...good, env: { 'A=B': 'c' } }) + '\n', /must not contain "="/],
      [JSON.stringify({ ...good, env: { A: 1 } }) + '\n', /env value of A/],
      [JSON.stringify({ ...good, argv: [] }) + '\n', /argv must be a non-empty/],
      [JSON.stringify({ ...good, argv: ['sh', 'a\u0000b'] }) + '\n', /argv\[1\]/],
      [Buffer.alloc(MAX_REQUEST + 70_000, 'x'), /longer than/],
      ['{"half": ', /ended before the request/],
    ];
    for (const [req, why] of bad) {
      const frames = await raw(req, 'end');
      assert.equal(frames.length, 1, `one frame for ${String(why)}`);
      assert.equal(frames[0]?.type, FRAME.error);
      assert.match(frames[0].text, why);
    }
    // A frame longer than allowed after the pid ends the session; the handler reaps its command.
    const frames = await raw(
      Buffer.concat([
        Buffer.from(JSON.stringify({ ...good, argv: ['cat'] }) + '\n'),
        encodeFrame(FRAME.input).subarray(0, 1),
        Buffer.from([0, 0x10, 0, 1]),
      ]),
    );
    assert.deepEqual(
      frames.map((f) => f.type),
      [FRAME.pid, FRAME.error],
    );
    assert.match(frames[1]?.text ?? '', new RegExp(`longer than ${MAX_FRAME}`));
    assert.equal(server.pid, pid, 'the same server');
    const r = await open(['sh', '-c', 'echo still serving']);
    assert.deepEqual(await r.exit, [0, null]);
    assert.match(r.out(), /still serving/);
    await until('handlers reaped', () => childrenOf(pid).length === 0);
    assert.deepEqual(logs, [], 'no session fell back to the helper so far');
  });

  it('when the agent goes away the session gets SIGHUP, and its handler reaps it and ends', async () => {
    const req = { cols: 80, rows: 24, uid: 0, gid: 0, user: 'root', cwd: '/', env: { PATH }, argv: ['cat'] };
    const frames = await raw(JSON.stringify(req) + '\n', undefined, (f) => f.type === FRAME.pid);
    assert.equal(frames[0]?.type, FRAME.pid);
    const pid = frames[0].payload.readUInt32BE(0);
    seen.add(pid);
    await until('the command gone (reaped by its handler, not orphaned)', () => !procStat(pid));
    await until('no handler left', () => childrenOf(serverPid()).length === 0);
  });

  it('a dead server: the next PTY runs under the one-shot helper, and the server comes back', async () => {
    const old = serverPid();
    process.kill(old, 'SIGKILL');
    await until('the server noticed gone', () => server.pid === undefined);
    assert.deepEqual(logs.splice(0), ['pty server exited (SIGKILL)']);
    const p = await pm.start(startOpts('cat', []));
    const w = watch(p);
    assert.equal(procStat(p.pid)?.ppid, process.pid, 'the one-shot helper, started by the agent');
    p.writePty(Buffer.from('via helper\n'));
    await until('the helper relays', () => w.out().split('via helper').length === 3);
    p.resize(90, 33);
    p.writePty(Buffer.from('\x04'));
    assert.equal((await w.end).status, 'exit status 0');
    await server.whenStarted();
    const fresh = serverPid();
    assert.notEqual(fresh, old, 'a new server');
    const q = await pm.start(startOpts('sh', ['-c', 'stty size; sleep 0.2']));
    const v = watch(q);
    assert.equal(procStat(procStat(q.pid)?.ppid ?? 0)?.ppid, fresh, 'through the new server');
    assert.equal((await v.end).exitCode, 0);
    assert.match(v.out(), /24 80/);
  });

  it('a server whose socket is gone is replaced; that PTY too runs under the helper', async () => {
    const old = serverPid();
    await unlink(server.socketPath ?? '');
    const w = watch(
      await pm.start(
        startOpts('sh', ['-c', 'echo fallback; stty size; grep SigIgn /proc/self/status'], {
          pty: { cols: 70, rows: 20 },
        }),
      ),
    );
    assert.equal((await w.end).exitCode, 0);
    assert.match(w.out(), /fallback\r\n20 70\r\nSigIgn:\s+0+\r\n/);
    assert.match(logs.join('\n'), /ENOENT.*; using the one-shot helper/);
    await server.whenStarted();
    assert.ok(server.pid && server.pid !== old, 'a new server');
    await until('the old server gone', () => !alive(old));
  });

  it('leaves no process behind: no server, no handler, no command', async () => {
    const servers = [...seen].filter((pid) => procStat(pid)?.ppid === process.pid);
    pm.killAll();
    server.stop();
    await until('every pid seen ended', () => [...seen].every((pid) => !alive(pid)));
    for (const s of servers) assert.deepEqual(childrenOf(s), []);
    assert.equal(server.pid, undefined);
    assert.deepEqual(readdirSync(join(base, 'run')), [], 'the socket directory removed');
  });
});
