import type { IncomingMessage, ServerResponse } from 'node:http';

/** A comment line this often keeps proxies and the browser from timing a quiet stream out. */
export const SSE_PING_MS = 15_000;

/** One server-sent-events stream to a browser. */
export interface SseStream {
  send(event: string, data: unknown): void;
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
    send(event, data) {
      if (done) return;
      // Past 4 MiB unsent the client is not reading: drop it, it reconnects and gets the state.
      if (res.writableLength > 4 << 20) {
        res.destroy();
        finish();
        return;
      }
      res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    },
    closed,
    end() {
      finish();
      res.end();
    },
  };
}
