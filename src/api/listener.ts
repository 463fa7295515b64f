/**
 * One HTTP listener of kilnd (native API on the unix socket, E2B API, envd proxy), hardened the
 * same way for all three:
 *
 * - limits: a connection cap, a deadline for the request head (idle and half-sent connections
 *   included), an optional deadline for the whole request, keep-alive caps;
 * - idle connections give way: near the cap, each new connection closes the oldest connection
 *   that has no request in progress (idle keep-alive, nothing sent yet, a half-sent head), so
 *   idle or slow clients cannot lock everyone else out; requests in progress (exec streams,
 *   Connect streams, template builds) are never touched;
 * - malformed HTTP (bad request line, bad header, bad chunking, no Host) is answered 400 with
 *   the listener's own error body (`invalid_argument` naming what was wrong), a request head
 *   not sent in time 408, and the connection is closed;
 * - an error boundary around the handler: nothing it throws escapes the server.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { ERROR_CODES, KilnError, asKilnError, invalidArgument } from '../core/errors.ts';
import { newId } from '../core/ids.ts';
import { clientGone, sendJson } from './http.ts';

export interface ListenerLimits {
  /** Connections at once; beyond it new connections are closed at accept (Node's maxConnections). */
  maxConnections: number;
  /** The request head must arrive within this, counted from the connection or the previous request. */
  headersTimeoutMs: number;
  /**
   * The whole request (head and body; not the answer) must arrive within this; 0 = no limit, for
   * listeners whose request bodies are streams (Connect client streams, uploads, imports).
   */
  requestTimeoutMs: number;
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeoutMs: number;
  /** Requests served on one connection before it is closed (0 = no limit). */
  maxRequestsPerSocket: number;
}

export interface ListenerOpts {
  /** For logs: `native`, `e2b-api`, `envd-proxy`. */
  name: string;
  limits: ListenerLimits;
  log: Logger;
  /** This listener's error body, for errors answered outside its handler (malformed HTTP). */
  errorBody: (e: KilnError, opId: string) => unknown;
  /**
   * Takes `Upgrade` requests (WebSocket; the envd proxy's published ports). Without it they are
   * plain requests to `handler`. An upgraded connection counts as busy for as long as it lives.
   */
  upgrade?: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
}

/** How often Node checks the head and request deadlines: often enough for short test deadlines. */
const checkEvery = (l: ListenerLimits): number => {
  const shortest = Math.min(
    l.headersTimeoutMs > 0 ? l.headersTimeoutMs : Infinity,
    l.requestTimeoutMs > 0 ? l.requestTimeoutMs : Infinity,
  );
  return Math.max(50, Math.min(1000, Math.floor(shortest / 4)));
};

/** What a malformed-HTTP error from Node's parser was about (the field of `invalid_argument`). */
function parseErrorField(code: string | undefined): string {
  switch (code) {
    case 'HPE_INVALID_METHOD':
      return 'method';
    case 'HPE_INVALID_URL':
      return 'url';
    case 'HPE_INVALID_VERSION':
      return 'version';
    case 'HPE_INVALID_CONTENT_LENGTH':
    case 'HPE_UNEXPECTED_CONTENT_LENGTH':
      return 'content-length';
    case 'HPE_INVALID_TRANSFER_ENCODING':
    case 'HPE_INVALID_CHUNK_SIZE':
      return 'transfer-encoding';
    case 'HPE_HEADER_OVERFLOW':
    case 'HPE_INVALID_HEADER_TOKEN':
    case 'HPE_INVALID_EOF_STATE':
    case 'HPE_LF_EXPECTED':
    case 'HPE_CR_EXPECTED':
      return 'headers';
    default:
      return 'request';
  }
}

/** A connection of an HTTP server: Node keeps the response in progress on it. */
type HttpConnection = Duplex & { _httpMessage?: unknown };

/** Logs at most one line per `everyMs` for a recurring event, with how many happened. */
function throttled(everyMs: number, emit: (count: number) => void): () => void {
  let count = 0;
  let last = 0;
  return () => {
    count++;
    const now = Date.now();
    if (now - last >= everyMs) {
      emit(count);
      count = 0;
      last = now;
    }
  };
}

/**
 * The connections of a listener in accept order, with the requests in progress on each. Near the
 * cap, each new connection closes the oldest idle ones (requests in progress are never touched).
 */
function connectionTracker(l: ListenerLimits, log: Logger) {
  const conns = new Map<Socket, number>();
  // Near the cap, idle connections give way; the margin keeps room for busy ones to come.
  const evictAt = Math.max(1, l.maxConnections - Math.max(1, Math.floor(l.maxConnections / 20)));
  const logEvicted = throttled(10_000, (n) => {
    log.warn(
      { evicted: n, connections: conns.size, max: l.maxConnections },
      'connection cap near: closed the oldest idle connections',
    );
  });
  return {
    /** A request began on its connection; it ends when its response closes. */
    request(req: IncomingMessage, res: ServerResponse): void {
      const sock = req.socket;
      conns.set(sock, (conns.get(sock) ?? 0) + 1);
      res.once('close', () => {
        const n = conns.get(sock);
        if (n !== undefined) conns.set(sock, Math.max(0, n - 1));
      });
    },
    /** A connection that left HTTP (an upgrade): never idle, never evicted. */
    upgraded(sock: Socket): void {
      if (conns.has(sock)) conns.set(sock, Infinity);
    },
    connection(sock: Socket): void {
      conns.set(sock, 0);
      sock.once('close', () => conns.delete(sock));
      if (conns.size <= evictAt) return;
      for (const [s, busy] of conns) {
        if (conns.size <= evictAt) break;
        if (busy > 0 || s === sock) continue;
        s.destroy();
        conns.delete(s);
        logEvicted();
      }
    },
  };
}

/** Answers what Node's HTTP parser refused (malformed HTTP, a head not sent in time). */
function clientErrorHandler(
  o: ListenerOpts,
  log: Logger,
): (err: NodeJS.ErrnoException, s: HttpConnection) => void {
  const answered = new WeakSet<Duplex>();
  return (err, s) => {
    if (answered.has(s)) return;
    answered.add(s);
    // A response in progress on this connection, or one that cannot be written: just close it.
    if (!s.writable || s._httpMessage || err.code === 'ECONNRESET' || err.code === 'EPIPE') {
      log.debug({ code: err.code }, 'connection closed by the client or unusable');
      s.destroy();
      return;
    }
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      log.debug('request not received in time: connection closed');
      s.end('HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      s.destroy();
      return;
    }
    const reason = (err as { reason?: string }).reason ?? err.message;
    const k =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? invalidArgument('headers', 'the request head is too large (at most 16 KiB)')
        : invalidArgument(
            parseErrorField(err.code),
            `malformed HTTP request (${err.code ?? 'parse error'}: ${reason})`,
          );
    const opId = newId('req');
    log.info({ opId, code: err.code, msg: k.message }, 'malformed request refused');
    let body: string;
    try {
      body = JSON.stringify(o.errorBody(k, opId));
    } catch {
      body = JSON.stringify({ code: k.code, message: k.message, opId });
    }
    s.end(
      `HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
        `X-Kiln-Op-Id: ${opId}\r\nConnection: close\r\n\r\n${body}`,
    );
    // The client reads the answer and closes; one that does not is cut off shortly after.
    setTimeout(() => s.destroy(), 2000).unref();
  };
}

/** Answers an error a handler threw synchronously (or the missing Host header). */
function answerError(o: ListenerOpts, log: Logger, res: ServerResponse, e: unknown): void {
  const k = asKilnError(e);
  const opId = newId('req');
  if (k.code === 'internal') log.error({ err: e, opId }, 'request handler threw');
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.setHeader('x-kiln-op-id', opId);
  sendJson(res, ERROR_CODES[k.code].status, o.errorBody(k, opId));
}

/**
 * Creates a hardened HTTP server around `handler` (not yet listening). `handler` should be an
 * error boundary itself (the router is); this one catches what a handler throws synchronously.
 */
export function createListener(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  o: ListenerOpts,
): Server {
  const l = o.limits;
  const log = o.log.child({ listener: o.name });
  // Node refuses a head deadline longer than the request deadline.
  const headersTimeout =
    l.requestTimeoutMs > 0 ? Math.min(l.headersTimeoutMs, l.requestTimeoutMs) : l.headersTimeoutMs;
  const tracker = connectionTracker(l, log);
  const logDropped = throttled(10_000, (n) => {
    log.warn({ dropped: n, max: l.maxConnections }, 'connection cap reached: refused new connections');
  });
  const server = createServer(
    {
      headersTimeout,
      requestTimeout: l.requestTimeoutMs,
      keepAliveTimeout: l.keepAliveTimeoutMs,
      connectionsCheckingInterval: checkEvery(l),
      // Checked below, so that the answer carries the listener's error body.
      requireHostHeader: false,
    },
    (req, res) => {
      tracker.request(req, res);
      try {
        if (req.httpVersion === '1.1' && req.headers.host === undefined) {
          res.setHeader('connection', 'close');
          throw invalidArgument('host', 'the Host header is required (HTTP/1.1)');
        }
        handler(req, res);
      } catch (e) {
        try {
          if (clientGone(req, res, e)) res.destroy();
          else answerError(o, log, res, e);
        } catch {
          res.destroy();
        }
      }
    },
  );
  server.maxConnections = l.maxConnections;
  server.maxRequestsPerSocket = l.maxRequestsPerSocket;
  server.on('connection', (sock: Socket) => {
    tracker.connection(sock);
  });
  const upgrade = o.upgrade;
  if (upgrade)
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      tracker.upgraded(req.socket);
      upgrade(req, socket, head);
    });
  server.on('drop', () => {
    logDropped();
  });
  server.on('clientError', clientErrorHandler(o, log));
  return server;
}
