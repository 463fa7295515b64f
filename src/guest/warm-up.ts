/**
 * The agent's warm-up: before it answers `/health` (after which kilnd snapshots the guest as a
 * template), the agent runs one command through its own Connect handler, as the SDK's
 * `commands.run` does (a JSON server stream of `process.Process/Start`). V8 compiles functions
 * lazily, on their first call: without this every sandbox restored from the snapshot would
 * parse and compile the whole request path (HTTP, Connect, protobuf JSON, the process manager)
 * on its first command, which is expensive under TCG. The compiled code is in the guest's
 * memory, so the snapshot keeps it.
 *
 * The request reaches the handler over a unix socket in a fresh directory only root may enter,
 * which exists only for the warm-up: no other process can send it anything, and the agent's
 * token check (which the warm-up has no token for) is not on that path.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import { join } from 'node:path';

export interface WarmUpOpts {
  /** The agent's Connect handler (the one its port serves, so the same code gets compiled). */
  rpc: (req: IncomingMessage, res: ServerResponse) => void;
  /** A directory only root may enter (made if missing); the socket goes in a fresh one below it. */
  dir: string;
  /** The user the command runs as (the agent's default user, as most commands do). */
  user: string;
  timeoutMs?: number;
}

/** The Connect envelope of one JSON message (flags 0, length, body). */
function envelope(msg: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(msg));
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/**
 * Runs `/bin/true` through `rpc` and reads the stream to its end. Resolves with the stream's
 * bytes (for tests); throws when the command's `end` does not come within `timeoutMs`.
 */
export async function warmUp(o: WarmUpOpts): Promise<string> {
  mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  const dir = mkdtempSync(join(o.dir, 'warm-'));
  const socketPath = join(dir, 'sock');
  const server = createServer((req, res) => {
    o.rpc(req, res);
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, resolve);
    });
    const body = envelope({ process: { cmd: '/bin/true', args: [], envs: {} }, stdin: false });
    return await new Promise<string>((resolve, reject) => {
      const req = request(
        {
          socketPath,
          method: 'POST',
          path: '/process.Process/Start',
          timeout: o.timeoutMs ?? 30_000,
          headers: {
            'content-type': 'application/connect+json',
            'connect-protocol-version': '1',
            authorization: `Basic ${Buffer.from(`${o.user}:`).toString('base64')}`,
            'content-length': body.length,
          },
        },
        (res) => {
          let text = '';
          res.setEncoding('latin1');
          res.on('data', (d: string) => (text += d));
          res.on('end', () => {
            if (res.statusCode === 200 && text.includes('"end"')) resolve(text);
            else
              reject(
                new Error(`the warm-up command answered ${String(res.statusCode)}: ${text.slice(0, 200)}`),
              );
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error('the warm-up command did not end in time')));
      req.on('error', reject);
      req.end(body);
    });
  } finally {
    server.close();
    server.closeAllConnections();
    rmSync(dir, { recursive: true, force: true });
  }
}
