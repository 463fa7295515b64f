/**
 * The persistent PTY server: one root python3 process the agent starts with itself (so it is
 * already running, warm, in every snapshot of the guest), which forks a handler per PTY session.
 * A one-shot helper (pty-helper.ts) pays Python's start-up, ~230 ms under TCG, on every
 * `pty.create`; a session of this server costs two forks and the command's exec.
 *
 * Protocol (the one definition: the Python source below takes its numbers from here; the agent's
 * side is pty-client.ts). The server listens on a unix stream socket in a directory only root
 * may enter; one connection is one session, served by a forked handler.
 *
 * - agent -> handler, first: one request line, JSON + "\n" (at most {@link MAX_REQUEST} bytes):
 *   {@link PtyRequest}. Untrusted: every field is checked (types, bounds, no NUL bytes); a bad
 *   request gets an `error` frame and the connection is closed.
 * - then frames, both ways: type (1 byte), payload length (4 bytes, big-endian), payload.
 *   agent -> handler: `input` (bytes for the terminal), `resize` (cols, rows: 2 x uint16 BE);
 *   a frame longer than {@link MAX_FRAME} ends the session; unknown types are ignored.
 *   handler -> agent: `pid` (uint32 BE: the command's pid, the leader of its session and
 *   process group), or `error` (UTF-8 text) when the request is refused or the fork failed; then
 *   `output` (terminal bytes) frames and one `exit` (uint8 0 + int32 exit code, or uint8 1 +
 *   int32 signal number), after which the handler closes the connection.
 * - EOF from the agent (it went away): the handler closes the terminal (the session gets SIGHUP)
 *   and exits.
 *
 * In the command's process: a new session with the terminal as its controlling tty (window size
 * set before the fork, so an early resize cannot be overwritten), SIGPIPE and SIGXFSZ back to
 * their defaults (Python ignores them, and an exec keeps ignored signals ignored), chdir(cwd)
 * (as root, before the switch, as the agent's other commands enter theirs: spawn's cwd, then
 * setpriv), then, only when `uid` differs from the server's, initgroups(user, gid) + setgid +
 * setuid, and execvpe(argv[0], argv, env) (PATH searched in `env`). Failing any of these writes
 * "kiln-pty: <cmd>: <error>" to the terminal and exits 127.
 *
 * After the command exits, the handler reads what the terminal still holds without blocking (the
 * kernel flushes the slave's pending output into that read), then sends `exit`: a background
 * process still holding the terminal does not hold the end back.
 */

/** Frame types (one byte). */
export const FRAME = { input: 1, resize: 2, pid: 3, output: 4, exit: 5, error: 6 } as const;
/** Largest request line, in bytes. */
export const MAX_REQUEST = 4 * 1024 * 1024;
/** Largest frame the handler accepts from the agent, in bytes. */
export const MAX_FRAME = 1024 * 1024;

/** The session request: the agent's first line. */
export interface PtyRequest {
  cols: number;
  rows: number;
  uid: number;
  gid: number;
  /** The user's name, for initgroups (its supplementary groups). */
  user: string;
  /** Absolute; entered before the switch to the user (as spawn's cwd is). */
  cwd: string;
  env: Record<string, string>;
  /** The command and its arguments; argv[0] is looked up in env's PATH. */
  argv: string[];
}

/** One frame, encoded. */
export function encodeFrame(type: number, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(type, 0);
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

/** Splits a byte stream into frames. */
export class FrameReader {
  #buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): void {
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, chunk]) : chunk;
  }

  /** The next whole frame, or undefined until more bytes arrive. */
  next(): { type: number; payload: Buffer } | undefined {
    if (this.#buf.length < 5) return undefined;
    const len = this.#buf.readUInt32BE(1);
    if (this.#buf.length < 5 + len) return undefined;
    const frame = { type: this.#buf.readUInt8(0), payload: this.#buf.subarray(5, 5 + len) };
    this.#buf = this.#buf.subarray(5 + len);
    return frame;
  }
}

/** `python3 -u -I -S -c PTY_SERVER <socket path>`: prints "ready" once it listens; exits at EOF on stdin. */
export const PTY_SERVER = String.raw`
# kiln's PTY server. Protocol and behaviour: src/guest/pty-server.ts (the one definition).
# Request: one JSON line {cols, rows, uid, gid, user, cwd, env, argv}. Frames: type (1 byte),
# length (4 bytes BE), payload. Agent -> handler: INPUT bytes, RESIZE (cols, rows as >HH).
# Handler -> agent: PID (>I) or ERROR (text), OUTPUT bytes, EXIT (>Bi: 0 + code or 1 + signal).
import os, sys, json, time, fcntl, select, signal, socket, struct, termios
# os.execvpe imports warnings: done now, as root, not in a command's process as its user.
import warnings
INPUT, RESIZE, PID, OUTPUT, EXIT, ERROR = ${FRAME.input}, ${FRAME.resize}, ${FRAME.pid}, ${FRAME.output}, ${FRAME.exit}, ${FRAME.error}
MAX_REQUEST, MAX_FRAME, MAX_PENDING = ${MAX_REQUEST}, ${MAX_FRAME}, 1 << 20

class Bad(Exception):
    pass

def frame(t, payload=b''):
    return struct.pack('>BI', t, len(payload)) + payload

def winsz(fd, cols, rows):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack('HHHH', rows, cols, 0, 0))

def text(v, what, empty=True):
    if type(v) is not str or '\0' in v or (not empty and not v):
        raise Bad('%s must be a%s string without NUL bytes' % (what, '' if empty else ' non-empty'))
    return v

def check(req):
    if type(req) is not dict:
        raise Bad('the request must be a JSON object')
    def num(k, hi):
        v = req.get(k)
        if type(v) is not int or not 0 <= v <= hi:
            raise Bad('%s must be an integer from 0 to %d' % (k, hi))
        return v
    cols, rows = num('cols', 65535), num('rows', 65535)
    uid, gid = num('uid', 4294967294), num('gid', 4294967294)
    user = text(req.get('user'), 'user', False)
    cwd = text(req.get('cwd'), 'cwd', False)
    if not cwd.startswith('/'):
        raise Bad('cwd must be absolute')
    env, argv = req.get('env'), req.get('argv')
    if type(env) is not dict:
        raise Bad('env must be an object')
    for k, v in env.items():
        if '=' in text(k, 'an env name', False):
            raise Bad('an env name must not contain "="')
        text(v, 'env value of ' + k)
    if type(argv) is not list or not argv:
        raise Bad('argv must be a non-empty array')
    for i, a in enumerate(argv):
        text(a, 'argv[%d]' % i, i > 0)
    return cols, rows, uid, gid, user, cwd, env, argv

def read_request(conn):
    conn.settimeout(30)
    buf = bytearray()
    while b'\n' not in buf:
        if len(buf) > MAX_REQUEST:
            raise Bad('the request is longer than %d bytes' % MAX_REQUEST)
        try:
            d = conn.recv(65536)
        except socket.timeout:
            raise Bad('no request within 30 s')
        if not d:
            raise Bad('the connection ended before the request did')
        buf += d
    conn.settimeout(None)
    line, _, rest = bytes(buf).partition(b'\n')
    try:
        req = json.loads(line)
    except Exception as e:
        raise Bad('the request is not JSON: %s' % e)
    return check(req), bytearray(rest)

def child(master, slave, uid, gid, user, cwd, env, argv):
    try:
        for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD):
            signal.signal(s, signal.SIG_DFL)
        os.close(master)
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
        if slave > 2:
            os.close(slave)
        os.chdir(cwd)
        if uid != os.getuid():
            os.initgroups(user, gid)
            os.setgid(gid)
            os.setuid(uid)
        os.execvpe(argv[0], argv, env)
    except BaseException as e:
        try:
            os.write(2, ('kiln-pty: %s: %s\n' % (argv[0], e)).encode('utf-8', 'replace'))
        finally:
            os._exit(127)

def drain(conn, master):
    while True:
        try:
            d = os.read(master, 65536)
        except OSError:
            return
        if not d:
            return
        conn.sendall(frame(OUTPUT, d))

def apply(f, master, pending):
    t, payload = f
    if t == INPUT:
        pending += payload
    elif t == RESIZE and len(payload) == 4:
        cols, rows = struct.unpack('>HH', payload)
        try:
            winsz(master, cols, rows)
        except OSError:
            pass

def frames(inbuf):
    while len(inbuf) >= 5:
        t, n = struct.unpack_from('>BI', inbuf)
        if n > MAX_FRAME:
            raise Bad('a frame of %d bytes is longer than %d' % (n, MAX_FRAME))
        if len(inbuf) < 5 + n:
            return
        payload = bytes(inbuf[5:5 + n])
        del inbuf[:5 + n]
        yield t, payload

def relay(conn, master, pid, wake, inbuf):
    fcntl.fcntl(master, fcntl.F_SETFL, fcntl.fcntl(master, fcntl.F_GETFL) | os.O_NONBLOCK)
    pending, master_open, status = bytearray(), True, None
    for f in frames(inbuf):
        apply(f, master, pending)
    while True:
        if status is None:
            p, st = os.waitpid(pid, os.WNOHANG)
            if p == pid and (os.WIFEXITED(st) or os.WIFSIGNALED(st)):
                status = st
        if status is not None:
            if master_open:
                drain(conn, master)
            if os.WIFSIGNALED(status):
                conn.sendall(frame(EXIT, struct.pack('>Bi', 1, os.WTERMSIG(status))))
            else:
                conn.sendall(frame(EXIT, struct.pack('>Bi', 0, os.WEXITSTATUS(status))))
            return True
        rs = [wake] + ([conn] if len(pending) < MAX_PENDING else []) + ([master] if master_open else [])
        ws = [master] if pending and master_open else []
        r, w, _ = select.select(rs, ws, [])
        if wake in r:
            while True:
                try:
                    if not os.read(wake, 512):
                        break
                except OSError:
                    break
        if master in r:
            try:
                d = os.read(master, 65536)
            except BlockingIOError:
                d = None
            except OSError:
                d = b''
            if d:
                conn.sendall(frame(OUTPUT, d))
            elif d == b'':
                master_open = False
                pending.clear()
        if master_open and master in w:
            try:
                del pending[:os.write(master, pending)]
            except BlockingIOError:
                pass
            except OSError:
                pending.clear()
        if conn in r:
            d = conn.recv(65536)
            if not d:
                return False
            inbuf += d
            for f in frames(inbuf):
                if master_open:
                    apply(f, master, pending)

def hangup(master, pid, wake):
    # The session ends without its exit (the agent went away, or a protocol error): closing the
    # terminal sends the session SIGHUP; wait a little for the command, so that it is reaped here
    # rather than orphaned.
    os.close(master)
    deadline = time.monotonic() + 2
    while os.waitpid(pid, os.WNOHANG)[0] == 0:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if select.select([wake], [], [], left)[0]:
            try:
                os.read(wake, 512)
            except OSError:
                pass

def handle(conn):
    rfd, wfd = os.pipe()
    for fd in (rfd, wfd):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wfd)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    try:
        (cols, rows, uid, gid, user, cwd, env, argv), inbuf = read_request(conn)
        master, slave = os.openpty()
        winsz(master, cols, rows)
        pid = os.fork()
    except Bad as e:
        conn.sendall(frame(ERROR, str(e).encode('utf-8', 'replace')))
        return
    except OSError as e:
        conn.sendall(frame(ERROR, ('cannot start the terminal: %s' % e).encode('utf-8', 'replace')))
        return
    if pid == 0:
        child(master, slave, uid, gid, user, cwd, env, argv)
    os.close(slave)
    ended = False
    try:
        conn.sendall(frame(PID, struct.pack('>I', pid)))
        ended = relay(conn, master, pid, rfd, inbuf)
    except Bad as e:
        conn.sendall(frame(ERROR, str(e).encode('utf-8', 'replace')))
    finally:
        if not ended:
            hangup(master, pid, rfd)

def reap(*_):
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return

def serve(path):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    # The socket is root's alone; the commands keep the agent's umask.
    umask = os.umask(0o077)
    srv.bind(path)
    os.umask(umask)
    srv.listen(128)
    signal.signal(signal.SIGCHLD, reap)
    os.write(1, b'ready\n')
    while True:
        r, _, _ = select.select([srv, 0], [], [])
        if 0 in r and not os.read(0, 4096):
            break
        if srv not in r:
            continue
        try:
            conn, _ = srv.accept()
        except OSError:
            continue
        try:
            pid = os.fork()
        except OSError as e:
            try:
                conn.settimeout(1)
                conn.sendall(frame(ERROR, ('cannot fork: %s' % e).encode()))
            except OSError:
                pass
            conn.close()
            continue
        if pid == 0:
            try:
                srv.close()
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd, False)
                handle(conn)
            except BaseException:
                pass
            finally:
                os._exit(0)
        conn.close()
    try:
        os.unlink(path)
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass

serve(sys.argv[1])
`;
