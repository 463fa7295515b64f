/** Test support: a fake QMP server on a unix socket (unit tests of the QMP client and its users). */
import { createServer, type Server, type Socket } from 'node:net';

/** A fake QMP server speaking the real framing: greeting, capabilities, replies, events. */
export function fakeQmp(
  path: string,
  handle: (cmd: { execute: string; id?: string; arguments?: unknown }, sock: Socket) => void,
): Promise<Server> {
  const srv = createServer((sock) => {
    sock.write(
      JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 } }, capabilities: [] } }) +
        '\r\n',
    );
    let buf = '';
    sock.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const cmd = JSON.parse(buf.slice(0, nl)) as { execute: string; id?: string };
        buf = buf.slice(nl + 1);
        if (cmd.execute === 'qmp_capabilities')
          sock.write(JSON.stringify({ return: {}, id: cmd.id }) + '\r\n');
        else handle(cmd, sock);
      }
    });
  });
  return new Promise((r) =>
    srv.listen(path, () => {
      r(srv);
    }),
  );
}
