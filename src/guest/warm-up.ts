/**
 * The agent's warm-up: before it answers `/health` (after which kilnd snapshots the guest as a
 * template), the agent runs a command through its own Connect handler in both of the forms it
 * is sent: JSON (the `e2b` SDK's `commands.run`) and binary protobuf (kilnd's guest client).
 * V8 compiles functions lazily, on their first call: without this every sandbox restored from
 * the snapshot would parse and compile the whole request path (HTTP, Connect, protobuf, the
 * process manager) on its first command, which is expensive under TCG. The compiled code is in
 * the guest's memory, so the snapshot keeps it.
 *
 * The requests reach the handler over a unix socket in a fresh directory only root may enter,
 * which exists only for the warm-up: no other process can send it anything, and the agent's
 * token check (which the warm-up has no token for) is not on that path.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { StartRequestSchema, StartResponseSchema } from '../core/envd/process/process_pb.js';

export interface WarmUpOpts {
  /** The agent's Connect handler (the one its port serves, so the same code gets compiled). */
  rpc: (req: IncomingMessage, res: ServerResponse) => void;
  /**
   * The agent's /init handler over a throwaway state (see `warmInit`), and the token that state
   * takes; unset: no /init in the warm-up.
   */
  init?: { handle: (req: IncomingMessage, res: ServerResponse) => void; token: string };
  /** A directory only root may enter (made if missing); the socket goes in a fresh one below it. */
  dir: string;
  /** The user the command runs as (the agent's default user, as most commands do). */
  user: string;
  /** Per request, of silence (default 30 s). */
  timeoutMs?: number;
  /**
   * For the whole warm-up (default 60 s): a command stream that never ends (its keep-alives
   * reset the per-request timeout) must not keep the agent from ever listening.
   */
  deadlineMs?: number;
}

/** What the requests of one warm-up share: the socket, limits and the overall deadline. */
interface Conn {
  socketPath: string;
  user: string;
  timeoutMs: number;
  signal: AbortSignal;
}

type Format = 'json' | 'proto';

const COMMAND = { process: { cmd: '/bin/true', args: [], envs: {} }, stdin: false };

/** The Connect envelope of one message (flags 0, length, body). */
function envelope(body: Uint8Array): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/**
 * Whether a Start stream (the response's bytes) carried the command's `end` and closed without
 * an error; else why not.
 */
export function streamEnded(bytes: Buffer, format: Format): true | string {
  try {
    return readStream(bytes, format);
  } catch (e) {
    return `a malformed stream (${(e as Error).message})`;
  }
}

function readStream(bytes: Buffer, format: Format): true | string {
  let sawEnd = false;
  for (let at = 0; at < bytes.length;) {
    if (bytes.length - at < 5) return 'a truncated stream';
    const flags = bytes.readUInt8(at);
    const len = bytes.readUInt32BE(at + 1);
    const data = bytes.subarray(at + 5, at + 5 + len);
    if (data.length < len) return 'a truncated stream';
    at += 5 + len;
    if (flags & 2) {
      // End of stream: JSON in both formats, `{}` or `{"error": ...}`.
      const e = (JSON.parse(data.toString('utf8')) as { error?: { message?: string } }).error;
      if (e) return `the stream ended with an error: ${e.message ?? JSON.stringify(e)}`;
      return sawEnd ? true : 'the stream ended without the command ending';
    }
    const ev =
      format === 'json'
        ? (JSON.parse(data.toString('utf8')) as { event?: { end?: unknown } }).event?.end !== undefined
        : fromBinary(StartResponseSchema, data).event?.event.case === 'end';
    sawEnd ||= ev;
  }
  return 'the stream was not closed';
}

/** Runs the command through `rpc` once as JSON, once as binary protobuf; throws what went wrong. */
export async function warmUp(o: WarmUpOpts): Promise<void> {
  mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  const dir = mkdtempSync(join(o.dir, 'warm-'));
  const socketPath = join(dir, 'sock');
  const deadlineMs = o.deadlineMs ?? 60_000;
  const c: Conn = {
    socketPath,
    user: o.user,
    timeoutMs: o.timeoutMs ?? 30_000,
    signal: AbortSignal.timeout(deadlineMs),
  };
  const server = createServer((req, res) => {
    if (req.url === '/init' && o.init) o.init.handle(req, res);
    else o.rpc(req, res);
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, resolve);
    });
    for (const format of ['json', 'proto'] as const) {
      const body =
        format === 'json'
          ? Buffer.from(JSON.stringify(COMMAND))
          : toBinary(StartRequestSchema, create(StartRequestSchema, COMMAND));
      const bytes = await post(c, format, envelope(body));
      const ok = streamEnded(bytes.body, format);
      if (bytes.status !== 200 || ok !== true)
        throw new Error(
          `the warm-up command (${format}) answered ${String(bytes.status)}: ${ok === true ? '' : ok} ${bytes.body.toString('utf8', 0, 200)}`.trim(),
        );
    }
    if (o.init) {
      const init = await send(c, '/init', initRequest(o.init.token));
      if (init.status !== 204)
        throw new Error(
          `the warm-up /init answered ${String(init.status)}: ${init.body.toString('utf8', 0, 200)}`,
        );
    }
  } finally {
    server.close();
    server.closeAllConnections();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The warm-up's /init: every field kilnd sends (a token, env, the time, an entropy seed), with
 * the time now, so the throwaway state's handler runs every step but setting the clock.
 */
function initRequest(token: string): { headers: Record<string, string>; body: Buffer } {
  const body = Buffer.from(
    JSON.stringify({
      accessToken: randomBytes(24).toString('hex'),
      envVars: { KILN_WARM_UP: '1' },
      timestamp: new Date().toISOString(),
      entropySeed: randomBytes(64).toString('base64'),
    }),
  );
  return { headers: { 'content-type': 'application/json', 'x-access-token': token }, body };
}

/** One Start request: its status and the stream's bytes. */
function post(c: Conn, format: Format, body: Buffer): Promise<Answer> {
  const headers = {
    'content-type': `application/connect+${format}`,
    'connect-protocol-version': '1',
    authorization: `Basic ${Buffer.from(`${c.user}:`).toString('base64')}`,
  };
  return send(c, '/process.Process/Start', { headers, body });
}

interface Answer {
  status: number;
  body: Buffer;
}

/** One POST over the warm-up's socket: its status and the answer's bytes. */
function send(c: Conn, path: string, r: { headers: Record<string, string>; body: Buffer }): Promise<Answer> {
  return new Promise((resolve, reject) => {
    if (c.signal.aborted) {
      reject(new Error(`the warm-up did not end in time: ${path} not sent`));
      return;
    }
    const req = request(
      {
        socketPath: c.socketPath,
        method: 'POST',
        path,
        timeout: c.timeoutMs,
        headers: { ...r.headers, 'content-length': r.body.length },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () => {
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`the warm-up's ${path} did not end in time`)));
    const onAbort = (): void => {
      req.destroy(new Error(`the warm-up did not end in time: ${path} was still running`));
    };
    c.signal.addEventListener('abort', onAbort, { once: true });
    req.on('close', () => {
      c.signal.removeEventListener('abort', onAbort);
    });
    req.on('error', reject);
    req.end(r.body);
  });
}
