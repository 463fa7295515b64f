/**
 * The envd proxy: one origin (E2B_SANDBOX_URL) for every sandbox's guest agent. Each request is
 * routed by its `E2b-Sandbox-Id` header (signed `/files` URLs, which carry none, by the sandbox
 * whose token validates the signature) and piped both ways without buffering, so Connect server
 * streams stay open as long as the guest keeps them. The proxy does not authenticate: the guest
 * agent checks `X-Access-Token` (and URL signatures) itself, so one sandbox's token cannot reach
 * another sandbox. Requests naming another guest port (Host `{port}-{id}.<domain>` or the
 * `E2b-Sandbox-Port` header) go to that port (published ports, port-proxy.ts), subject to the
 * sandbox's traffic policy.
 */
import {
  Agent,
  request,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import type { Logger } from 'pino';
import { fileSignature, safeEqual } from '../core/envd-auth.ts';
import { ERROR_CODES, asKilnError, invalidArgument } from '../core/errors.ts';
import { SandboxConnector } from '../daemon/connect.ts';
import type { SandboxService } from '../daemon/sandbox-service.ts';
import { clientGone, parseTarget, sendJson } from './http.ts';
import { forgetPort, handleUpgrade, resolvePort, type PortProxyDeps } from './port-proxy.ts';
import { PUBLIC_TRAFFIC, portClosedBody, targetOf, type TrafficPolicy } from './port-target.ts';
import type { Duplex } from 'node:stream';

/** Hop-by-hop headers (RFC 9110 7.6.1) are the proxy's own business; they are not forwarded. */
const HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'proxy-authenticate',
  'te',
  'trailer',
  'upgrade',
]);

function forwardHeaders(h: IncomingHttpHeaders): IncomingHttpHeaders {
  const out: IncomingHttpHeaders = {};
  for (const [k, v] of Object.entries(h)) if (!HOP.has(k) && v !== undefined) out[k] = v;
  return out;
}

export interface EnvdProxyDeps {
  svc: SandboxService;
  log: Logger;
  /** Resumes a paused autoResume sandbox on its first request (default: one on the wall clock). */
  connector?: SandboxConnector;
  /**
   * Who may reach a sandbox's published ports and the Host its guest sees (default: everyone,
   * the client's Host). Throws `not_found` for an unknown sandbox.
   */
  traffic?: (sandboxId: string) => TrafficPolicy;
}

export interface EnvdProxy {
  handle: (req: IncomingMessage, res: ServerResponse) => void;
  /** The server's `upgrade` listener (WebSocket to published ports). */
  upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  /** Drops pooled connections and ends upgraded ones (which the server's close does not); repeatable. */
  close: () => void;
}

/** E2B's proxy answers 502 for a sandbox it cannot reach; the SDK reads that as "not running". */
function sendProxyError(res: ServerResponse, status: number, message: string, sandboxId?: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, status, { code: status, message, ...(sandboxId ? { sandboxId } : {}) });
}

/**
 * The proxy's state: its deps, the autoResume and traffic policies, published-port state
 * (PortProxyDeps), and its connection pools to guests.
 */
interface Proxy extends PortProxyDeps {
  agent: Agent;
  /** Connections to published ports are not reused: guest servers close idle ones as they like. */
  portAgent: Agent;
}

/** The running sandbox whose token produced this `/files` URL's signature, if any. */
function bySignature(svc: SandboxService, q: URLSearchParams, method: string): string | undefined {
  const sig = q.get('signature');
  if (!sig) return undefined;
  const expRaw = q.get('signature_expiration');
  const exp = expRaw === null ? undefined : Number(expRaw);
  if (exp !== undefined && !Number.isInteger(exp)) return undefined;
  const op = method === 'POST' ? 'write' : 'read';
  const path = q.get('path') ?? '';
  const user = q.get('username') ?? '';
  let cursor: string | undefined;
  do {
    const page = svc.list({ states: ['running', 'paused'] }, { limit: 1000, cursor });
    for (const s of page.items)
      if (safeEqual(sig, fileSignature(path, op, user, s.accessToken, exp))) return s.id;
    cursor = page.next;
  } while (cursor);
  return undefined;
}

/**
 * The running or paused sandbox whose envd access token this is, if any: e2b@2.7's envd HTTP
 * client (`/files`, `/health`) sends `X-Access-Token` but no `E2b-Sandbox-Id`, and each
 * sandbox's token is its own, so the token names the sandbox as a signature does.
 */
function byToken(svc: SandboxService, token: string | string[] | undefined): string | undefined {
  if (typeof token !== 'string' || token === '') return undefined;
  let cursor: string | undefined;
  do {
    const page = svc.list({ states: ['running', 'paused'] }, { limit: 1000, cursor });
    for (const s of page.items) if (safeEqual(token, s.accessToken)) return s.id;
    cursor = page.next;
  } while (cursor);
  return undefined;
}

/** Pipes the guest's answer back; an answer Node cannot repeat is a 502. */
function relayAnswer(ur: IncomingMessage, res: ServerResponse, id: string, log: Logger): void {
  try {
    res.writeHead(ur.statusCode ?? 502, forwardHeaders(ur.headers));
    // Stream heads (Connect's first envelope) must reach the client now, not with the body.
    res.flushHeaders();
  } catch (e) {
    // An answer Node cannot repeat (a status or header a guest should not send).
    log.warn({ err: e }, 'envd proxy: the guest answered what cannot be passed on');
    ur.resume();
    sendProxyError(res, 502, `sandbox ${id} answered malformed HTTP`, id);
    return;
  }
  ur.pipe(res);
  ur.on('error', () => res.destroy());
}

/** Sends the request to the guest agent at `baseUrl` and pipes both ways without buffering. */
function forward(
  p: Proxy,
  req: IncomingMessage,
  res: ServerResponse,
  to: {
    url: URL;
    id: string;
    baseUrl: string;
    /** A published port: the Host its guest sees, and its port (for the "port not open" answer). */
    published?: { host: string; port: number };
  },
  log: Logger,
): void {
  const { url, id, published } = to;
  const target = new URL(to.baseUrl);
  let up: ReturnType<typeof request>;
  try {
    up = request({
      host: target.hostname,
      port: target.port,
      method: req.method,
      // The parsed target, so the guest sees a plain path whatever form the client sent.
      path: url.pathname + url.search,
      headers: { ...forwardHeaders(req.headers), host: published?.host ?? target.host },
      agent: published ? p.portAgent : p.agent,
    });
  } catch (e) {
    req.resume();
    sendProxyError(
      res,
      400,
      invalidArgument('request', `cannot be forwarded: ${(e as Error).message}`).message,
      id,
    );
    return;
  }
  let answer: IncomingMessage | undefined;
  up.on('response', (ur) => {
    answer = ur;
    relayAnswer(ur, res, id, log);
  });
  // The guest answered in full and closed while the client still sends its body (an upload
  // refused for space): the answer goes out whole and the rest of the body is read and dropped.
  // Left unread it would stall the client; destroying its connection with the body unread
  // would reset it, and a reset can lose the answer on its way.
  up.on('close', () => {
    if (answer?.complete && !req.complete) {
      req.unpipe(up);
      req.resume();
    }
  });
  up.on('error', (e: NodeJS.ErrnoException) => {
    if (answer?.complete) return; // see 'close'
    if (answer) {
      res.destroy();
      return;
    }
    if (clientGone(req, res)) {
      // The client hung up first (and the upstream request was cut because of it).
      log.debug({ sandboxId: id }, 'envd proxy: client went away');
      return;
    }
    if (published) {
      // QEMU accepts for the guest; a port nobody listens on drops the connection.
      forgetPort(p, id, published.port);
      log.debug({ port: published.port, err: e.message }, 'envd proxy: guest port not open');
      if (res.headersSent) res.destroy();
      else sendJson(res, 502, portClosedBody(id, published.port));
      return;
    }
    // The VM behind the cached address may be gone (killed, restored elsewhere).
    p.svc.forgetAgent(id);
    log.info({ sandboxId: id, err: e.message }, 'envd proxy: guest unreachable');
    sendProxyError(res, 502, `sandbox ${id} is not reachable: ${e.code ?? e.message}`, id);
  });
  // A client that goes away ends the upstream request too (the guest sees the stream close).
  res.on('close', () => {
    if (!res.writableFinished) up.destroy();
  });
  req.pipe(up);
}

/**
 * The sandbox a request is for (its header, a signed `/files` URL's signer, or the sandbox whose
 * access token it carries), or an answer
 * saying why there is none (then undefined).
 */
function envdTarget(
  p: Proxy,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  named: string | undefined,
): string | undefined {
  let id = named;
  if (id === undefined && url.pathname === '/files')
    id = bySignature(p.svc, url.searchParams, req.method ?? 'GET');
  if (id === undefined) id = byToken(p.svc, req.headers['x-access-token']);
  if (id === undefined) {
    req.resume();
    const signed = url.pathname === '/files' && url.searchParams.has('signature');
    sendProxyError(
      res,
      signed ? 401 : 400,
      signed
        ? 'invalid signature: no running sandbox signed this URL'
        : 'missing E2b-Sandbox-Id header: set E2B_SANDBOX_URL and use the e2b SDK, or send the header',
    );
    return undefined;
  }
  return id;
}

/** A request to a published port: checked, the sandbox woken if it may be, then forwarded. */
async function routePort(
  p: Proxy,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  t: { id: string; port: number },
): Promise<void> {
  const r = await resolvePort(p, t, req.headers);
  if (!r.ok) {
    req.resume();
    if (res.headersSent) res.destroy();
    else sendJson(res, r.status, r.body);
    return;
  }
  const log = p.log.child({ sandboxId: t.id, port: t.port });
  forward(p, req, res, { url, id: t.id, baseUrl: r.baseUrl, published: { host: r.host, port: t.port } }, log);
}

async function route(p: Proxy, req: IncomingMessage, res: ServerResponse): Promise<void> {
  let url: URL;
  try {
    url = parseTarget(req.url);
  } catch (e) {
    req.resume();
    sendProxyError(res, 400, asKilnError(e).message);
    return;
  }
  const t = targetOf(req.headers);
  if (t.kind === 'bad') {
    req.resume();
    sendProxyError(res, t.status, t.message);
    return;
  }
  if (t.kind === 'port') {
    await routePort(p, req, res, url, t);
    return;
  }
  const id = envdTarget(p, req, res, url, t.id);
  if (id === undefined) return;
  const log = p.log.child({ sandboxId: id });
  let baseUrl: string;
  try {
    await p.connector.resumeOnTraffic(id);
    baseUrl = (await p.svc.agent(id)).baseUrl;
  } catch (e) {
    req.resume();
    const k = asKilnError(e);
    if (k.code === 'not_found' || k.code === 'invalid_state' || k.code === 'invalid_argument') {
      // E2B's proxy answers 502 for sandboxes it does not know or that do not run.
      sendProxyError(res, 502, `The sandbox ${id} was not found or is not running (${k.message})`, id);
      return;
    }
    log.warn({ err: e }, 'envd proxy: routing failed');
    sendProxyError(res, ERROR_CODES[k.code].status, k.message, id);
    return;
  }
  forward(p, req, res, { url, id, baseUrl }, log);
}

/** The request's error boundary: whatever routing throws is answered (or the client is gone). */
function handle(p: Proxy, req: IncomingMessage, res: ServerResponse): void {
  const failed = (e: unknown): void => {
    try {
      if (clientGone(req, res, e)) {
        p.log.debug({ err: (e as Error | undefined)?.message }, 'envd proxy: client went away');
        res.destroy();
        return;
      }
      const k = asKilnError(e);
      if (k.code === 'internal') p.log.error({ err: e }, 'envd proxy failed');
      else p.log.info({ code: k.code, msg: k.message }, 'envd proxy: request refused');
      sendProxyError(res, ERROR_CODES[k.code].status, k.message);
    } catch {
      res.destroy();
    }
  };
  try {
    route(p, req, res).catch(failed);
  } catch (e) {
    failed(e);
  }
}

export function createEnvdProxy(d: EnvdProxyDeps): EnvdProxy {
  const p: Proxy = {
    svc: d.svc,
    log: d.log,
    // Connections to guests are kept open between requests: a new TCP connection through QEMU's
    // user-mode network costs a round trip into the guest.
    agent: new Agent({ keepAlive: true, keepAliveMsecs: 30_000, maxFreeSockets: 16 }),
    portAgent: new Agent({ keepAlive: false }),
    connector: d.connector ?? new SandboxConnector(d.svc),
    traffic: d.traffic ?? (() => PUBLIC_TRAFFIC),
    tunnels: new Set(),
    ports: new Map(),
  };
  return {
    handle: (req, res) => {
      handle(p, req, res);
    },
    upgrade: (req, socket, head) => {
      handleUpgrade(p, req, socket, head);
    },
    close: () => {
      p.agent.destroy();
      p.portAgent.destroy();
      for (const s of p.tunnels) s.destroy();
      p.tunnels.clear();
    },
  };
}
