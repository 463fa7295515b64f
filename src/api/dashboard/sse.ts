import type { IncomingMessage, ServerResponse } from 'node:http';

/** A comment line this often keeps proxies and the browser from timing a quiet stream out. */
export const SSE_PING_MS = 15_000;

/** Past this much unsent, `drained` waits: a producer that can wait lets the socket catch up. */
const DRAIN_BELOW = 256 << 10;

/** One server-sent-events stream to a browser. */
export interface SseStream {
  /** `id`: what the browser sends back as `Last-Event-ID` when it reconnects. */
  send(event: string, data: unknown, id?: string): void;
  /** Resolves once the socket has taken most of what was sent (or the stream closed). */
  drained(): Promise<void>;
  /** Resolves when the client has gone (or the stream was ended). */
  readonly closed: Promise<void>;
  end(): void;
}

/**
 * Answers `res` as a text/event-stream and keeps it open until the client goes away. Writes
 * that the socket cannot take at once are dropped for a slow client rather than buffered without
 * bound: the next event carries the whole state again.
 */
export function openSse(req: IncomingMessage, res: ServerResponse): SseStream {
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-store',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  res.write(': kiln\n\n');
  let done = false;
  let resolveClosed = (): void => undefined;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  const ping = setInterval(() => {
    if (!done) res.write(': ping\n\n');
  }, SSE_PING_MS);
  const finish = (): void => {
    if (done) return;
    done = true;
    clearInterval(ping);
    resolveClosed();
  };
  req.on('close', finish);
  res.on('close', finish);
  res.on('error', finish);
  return {
    send(event, data, id) {
      if (done) return;
      // Past 4 MiB unsent the client is not reading: drop it, it reconnects and gets the state.
      if (res.writableLength > 4 << 20) {
        res.destroy();
        finish();
        return;
      }
      res.write(`${id === undefined ? '' : `id: ${id}\n`}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    },
    drained() {
      if (done || res.writableLength < DRAIN_BELOW) return Promise.resolve();
      return Promise.race([new Promise<void>((r) => res.once('drain', r)), closed]);
    },
    closed,
    end() {
      finish();
      res.end();
    },
  };
}
