/**
 * Raw HTTP/1.1 over a socket (node:net), for hostile-input tests: the request is sent as the
 * exact bytes given (no client library fixes it up), and the first response is parsed just far
 * enough to know its status, headers and body.
 */
import { connect, type Socket } from 'node:net';

/** A TCP port on 127.0.0.1, or a unix socket path. */
export type RawTarget = { port: number } | { path: string };

export interface RawResponse {
  status: number;
  /** Header names in lower case; repeated headers joined with ", ". */
  headers: Record<string, string>;
  body: string;
}

export type RawOutcome =
  | { kind: 'response'; res: RawResponse }
  /** The server closed the connection without a (complete) response. */
  | { kind: 'closed'; partial: string }
  | { kind: 'reset'; code: string }
  | { kind: 'timeout' };

export interface RawOpts {
  /** Half-close (FIN) our side this long after sending, if no answer came yet (default 400 ms). */
  halfCloseAfterMs?: number;
  /** Give up after this long (default 5000 ms). */
  timeoutMs?: number;
  /** The request's method is HEAD: a response to it has no body. */
  head?: boolean;
}

export function openSocket(t: RawTarget): Socket {
  return 'path' in t ? connect(t.path) : connect(t.port, '127.0.0.1');
}

/** Parses one response at the start of `buf`; undefined while it is incomplete. */
export function parseResponse(buf: Buffer, head = false): { res: RawResponse; rest: Buffer } | undefined {
  let at = 0;
  for (;;) {
    const end = buf.indexOf('\r\n\r\n', at);
    if (end < 0) return undefined;
    const lines = buf.subarray(at, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
    if (!m) throw new Error(`not an HTTP response: ${JSON.stringify(lines[0])}`);
    const status = Number(m[1]);
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      if (i <= 0) continue;
      const k = l.slice(0, i).trim().toLowerCase();
      const v = l.slice(i + 1).trim();
      headers[k] = headers[k] === undefined ? v : `${headers[k]}, ${v}`;
    }
    const bodyAt = end + 4;
    // 1xx answers (100 Continue) come before the real one.
    if (status >= 100 && status < 200) {
      at = bodyAt;
      continue;
    }
    if (head || status === 204 || status === 304)
      return { res: { status, headers, body: '' }, rest: buf.subarray(bodyAt) };
    const len = headers['content-length'];
    if (len !== undefined) {
      const n = Number(len);
      if (buf.length - bodyAt < n) return undefined;
      return {
        res: { status, headers, body: buf.subarray(bodyAt, bodyAt + n).toString('utf8') },
        rest: buf.subarray(bodyAt + n),
      };
    }
    if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
      const parts: Buffer[] = [];
      let p = bodyAt;
      for (;;) {
        const eol = buf.indexOf('\r\n', p);
        if (eol < 0) return undefined;
        const size = parseInt(buf.subarray(p, eol).toString('latin1'), 16);
        if (!Number.isFinite(size)) throw new Error('bad chunk size in response');
        if (size === 0) {
          const fin = buf.indexOf('\r\n\r\n', eol);
          if (fin < 0) return undefined;
          return {
            res: { status, headers, body: Buffer.concat(parts).toString('utf8') },
            rest: buf.subarray(fin + 4),
          };
        }
        if (buf.length < eol + 2 + size + 2) return undefined;
        parts.push(buf.subarray(eol + 2, eol + 2 + size));
        p = eol + 2 + size + 2;
      }
    }
    // No length: the body runs to the end of the connection.
    return undefined;
  }
}

/** Sends `bytes` on a new connection and resolves with what came back (never rejects). */
export function rawRequest(t: RawTarget, bytes: Buffer | string, o: RawOpts = {}): Promise<RawOutcome> {
  return new Promise((resolve) => {
    const s = openSocket(t);
    let buf = Buffer.alloc(0);
    let done = false;
    const timers: NodeJS.Timeout[] = [];
    const finish = (out: RawOutcome): void => {
      if (done) return;
      done = true;
      for (const x of timers) clearTimeout(x);
      s.destroy();
      resolve(out);
    };
    s.on('connect', () => {
      s.write(bytes);
      timers.push(
        setTimeout(() => {
          if (!s.destroyed) s.end();
        }, o.halfCloseAfterMs ?? 400),
      );
    });
    timers.push(
      setTimeout(() => {
        finish({ kind: 'timeout' });
      }, o.timeoutMs ?? 5000),
    );
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      try {
        const r = parseResponse(buf, o.head);
        if (r) finish({ kind: 'response', res: r.res });
      } catch {
        finish({ kind: 'closed', partial: buf.toString('latin1').slice(0, 200) });
      }
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      finish({ kind: 'reset', code: e.code ?? e.message });
    });
    s.on('close', () => {
      // A response without a length ends with the connection.
      const m = /^HTTP\/1\.[01] (\d{3})[^\r]*\r\n([\s\S]*?)\r\n\r\n([\s\S]*)$/.exec(buf.toString('utf8'));
      if (m && !/content-length|transfer-encoding/i.test(m[2] ?? ''))
        finish({ kind: 'response', res: { status: Number(m[1]), headers: {}, body: m[3] ?? '' } });
      else finish({ kind: 'closed', partial: buf.toString('latin1').slice(0, 200) });
    });
  });
}

/** Opens a connection and resolves once it is established (the socket stays open). */
export function openIdle(t: RawTarget): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = openSocket(t);
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** Runs `fn` over `items` with at most `limit` at once. */
export async function pool<T, R>(
  items: T[],
  limit: number,
  fn: (x: T, i: number) => Promise<R>,
): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
