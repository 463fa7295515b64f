/**
 * Node has no pseudo-terminal API without a native addon, so a PTY process runs under this small
 * Python helper (python3 is in every kiln image). Protocol: argv = cols rows cmd args...;
 * fd 0 = input to the terminal, fd 1 = terminal output, fd 3 = control lines "resize C R".
 * The helper exits with the child's status, or re-raises the signal that killed it.
 */
export const PTY_HELPER = String.raw`
import os, sys, pty, select, fcntl, termios, struct, signal
cols, rows, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
def winsz(fd, c, r):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack('HHHH', r, c, 0, 0))
pid, master = pty.fork()
if pid == 0:
    winsz(0, cols, rows)
    # Python ignores these, and an exec keeps ignored signals ignored.
    for s in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(s, signal.SIG_DFL)
    try:
        os.execvp(argv[0], argv)
    except Exception as e:
        os.write(2, ("kiln-pty: %s: %s\n" % (argv[0], e)).encode())
        os._exit(127)
def forward(sig, _frame):
    try:
        os.killpg(pid, sig)
    except OSError:
        pass
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, forward)
inputs = {0: True, 3: True}
ctl = b''
while True:
    fds = [master] + [f for f, open_ in inputs.items() if open_]
    try:
        r, _, _ = select.select(fds, [], [])
    except InterruptedError:
        continue
    if master in r:
        try:
            data = os.read(master, 16384)
        except OSError:
            data = b''
        if not data:
            break
        os.write(1, data)
    if 0 in r:
        data = os.read(0, 65536)
        if data:
            os.write(master, data)
        else:
            inputs[0] = False
    if 3 in r:
        data = os.read(3, 4096)
        if not data:
            inputs[3] = False
        ctl += data
        while b'\n' in ctl:
            line, ctl = ctl.split(b'\n', 1)
            parts = line.split()
            if len(parts) == 3 and parts[0] == b'resize':
                winsz(master, int(parts[1]), int(parts[2]))
_, status = os.waitpid(pid, 0)
if os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
sys.exit(os.waitstatus_to_exitcode(status))
`;
