/**
 * The bare in-guest command as a create's first exec meets it: spawned as the first thing in a
 * freshly restored QEMU, by a process already running in the snapshot, with no agent in the way.
 *
 * Under TCG a restored QEMU has translated none of the guest's code: its first command pays the
 * translation of the kernel's fork and exec paths, setpriv, bash and the profile scripts, which
 * a command in a guest that has run it before does not. A spawn timed by a program the agent has
 * just started is not cold either: the agent ran setpriv and bash -l to start it. So a sandbox
 * runs a small spawner (python3, listening on a guest port) and is snapshotted with it; each run
 * restores that snapshot with plain QEMU (raw-qemu.ts), waits for the agent's /health as the
 * raw baseline does, and asks the spawner for one spawn, which it times itself.
 */
import { createConnection } from 'node:net';
import type { KilnClient } from '../src/sdk/client.ts';
import { asDefaultUser } from './kiln-measure.ts';
import { rawRestore, snapshotFiles, type BootFiles } from './raw-qemu.ts';
import { FORWARD_HOST } from '../src/vmm/qemu/args.ts';
import { exposeForward } from '../src/vmm/qemu/port-forwards.ts';

const SPAWNER_PORT = 7777;
const READY = '/run/kiln-bench-spawner-ready';

/** The spawner: on each connection, one spawn of `argv`; answers "<ms> <first output line>". */
function spawnerProgram(argv: string[]): string {
  return `
import socket, subprocess, time
argv = ${JSON.stringify(argv)}
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", ${SPAWNER_PORT}))
s.listen(8)
open("${READY}", "w").close()
while True:
    c, _ = s.accept()
    c.recv(16)
    t = time.perf_counter()
    p = subprocess.run(argv, stdout=subprocess.PIPE)
    ms = (time.perf_counter() - t) * 1000
    c.sendall(("%.1f %s\\n" % (ms, p.stdout.decode().strip())).encode())
    c.close()
`;
}

/** The command a create's first exec runs, as the agent spawns it for the default user. */
const FIRST_COMMAND = asDefaultUser('echo ready');

/**
 * Snapshots a sandbox of `template` running the spawner (warmed by one spawn, as the agent is
 * by its warm-up); returns the snapshot's id. The sandbox is killed.
 */
export async function spawnerSnapshot(c: KilnClient, template = 'base'): Promise<string> {
  const s = await c.createSandbox({ template });
  try {
    const program = spawnerProgram(FIRST_COMMAND).replaceAll("'", `'"'"'`);
    await c.exec(s.sandboxId, `nohup python3 -u -c '${program}' > /dev/null 2>&1 &`, { user: 'root' });
    let out = '';
    await c.exec(
      s.sandboxId,
      `while [ ! -e ${READY} ]; do sleep 0.1; done; python3 -c 'import socket; c = socket.create_connection(("127.0.0.1", ${SPAWNER_PORT})); c.sendall(b"go\\n"); print(c.recv(100).decode())'`,
      {
        user: 'root',
        timeoutMs: 60_000,
        onStdout: (b) => (out += b.toString()),
        onStderr: (b) => (out += b.toString()),
      },
    );
    if (!out.includes('ready')) throw new Error(`the spawner did not answer: ${out}`);
    return (await c.snapshot(s.sandboxId)).snapshotId;
  } finally {
    await c.killSandbox(s.sandboxId);
  }
}

/** Restores `snapshotId` with plain QEMU and has its spawner spawn once: its time (ms). */
export async function rawColdSpawnMs(img: BootFiles, stateDir: string, snapshotId: string): Promise<number> {
  const vm = await rawRestore(img, snapshotFiles(stateDir, snapshotId, 512));
  try {
    const ep = await exposeForward(vm.qmp, 'raw', FORWARD_HOST, SPAWNER_PORT);
    const answer = await new Promise<string>((resolve, reject) => {
      let got = '';
      const sock = createConnection({ host: ep.host, port: ep.port }, () => {
        sock.write('go\n');
      });
      sock.setEncoding('utf8');
      sock.on('data', (d: string) => (got += d));
      sock.on('end', () => {
        resolve(got);
      });
      sock.on('error', reject);
      sock.setTimeout(60_000, () => {
        sock.destroy(new Error('the spawner did not answer in 60 s'));
      });
    });
    const [ms, out] = answer.trim().split(' ');
    if (out !== 'ready') throw new Error(`the spawner answered "${answer.trim()}"`);
    return Number(ms);
  } finally {
    vm.qmp.close();
    await vm.stop();
  }
}
