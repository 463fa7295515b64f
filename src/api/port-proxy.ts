/**
 * Published ports: the envd proxy's routes to any guest TCP port of a sandbox (see
 * port-target.ts for how a request names one). Plain HTTP goes through the envd proxy's own
 * streaming forwarder; `Upgrade` requests (WebSocket) are handled here: the handshake is
 * forwarded, then the two sockets are piped both ways until either side closes.
 */
import { request, STATUS_CODES, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { asKilnError, ERROR_CODES } from '../core/errors.ts';
import type { SandboxConnector } from '../daemon/connect.ts';
import type { SandboxService } from '../daemon/sandbox-service.ts';
import { parseTarget } from './http.ts';
import {
  guestHost,
  portClosedBody,
  targetOf,
  trafficRefusal,
  type ProxyTarget,
  type TrafficPolicy,
} from './port-target.ts';

export interface PortProxyDeps {
  svc: SandboxService;
  log: Logger;
  connector: SandboxConnector;
  traffic: (sandboxId: string) => TrafficPolicy;
  /** The client sockets of live upgraded connections (the HTTP server no longer sees them). */
  tunnels: Set<Duplex>;
  /** Published ports by `<id>:<port>`, for the VM that started at `startedAt` (see `forgetPort`). */
  ports: Map<string, { startedAt: string | null; baseUrl: string }>;
}

/** The most published ports remembered; past it the cache starts over (ended sandboxes' entries go). */
const MAX_CACHED_PORTS = 4096;

/** Drops a remembered published port (its connection failed: the VM or its forward may be gone). */
export function forgetPort(d: Pick<PortProxyDeps, 'ports'>, id: string, port: number): void {
  d.ports.delete(`${id}:${port}`);
}

/**
 * The published port's base URL: remembered while the sandbox runs the same VM (a resume or
 * restore starts another, without the forward), so requests do not each ask the hypervisor.
 */
async function publishedUrl(d: PortProxyDeps, id: string, port: number): Promise<string> {
  const { sandbox } = await d.svc.agent(id);
  const key = `${id}:${port}`;
  const known = d.ports.get(key);
  if (known && known.startedAt === sandbox.startedAt) return known.baseUrl;
  const { baseUrl } = await d.svc.guestPort(id, port);
  if (d.ports.size >= MAX_CACHED_PORTS) d.ports.clear();
  d.ports.set(key, { startedAt: sandbox.startedAt, baseUrl });
  return baseUrl;
}

/** Where a published-port request goes (`baseUrl`, with `host` as its Host), or the answer refusing it. */
export type PortRoute =
  { ok: true; baseUrl: string; host: string } | { ok: false; status: number; body: Record<string, unknown> };

const refuse = (status: number, message: string, sandboxId: string): PortRoute => ({
  ok: false,
  status,
  body: { code: status, message, sandboxId },
});

/** The refusal for an error of the lookup, resume or forward set-up (E2B: 502 for unknown or stopped sandboxes). */
function refusalOf(d: PortProxyDeps, e: unknown, id: string): PortRoute {
  const k = asKilnError(e);
  if (k.code === 'not_found' || k.code === 'invalid_state')
    return refuse(502, `The sandbox ${id} was not found or is not running (${k.message})`, id);
  if (k.code === 'internal' || k.code === 'driver_error')
    d.log.warn({ err: e, sandboxId: id }, 'envd proxy: publishing a port failed');
  return refuse(ERROR_CODES[k.code].status, k.message, id);
}

/**
 * Checks the sandbox's traffic policy (before anything wakes it), resumes a paused autoResume
 * sandbox, and publishes the guest port.
 */
export async function resolvePort(
  d: PortProxyDeps,
  t: { id: string; port: number },
  h: IncomingHttpHeaders,
): Promise<PortRoute> {
  let policy: TrafficPolicy;
  try {
    policy = d.traffic(t.id);
  } catch (e) {
    return refusalOf(d, e, t.id);
  }
  const refused = trafficRefusal(policy, h, t.id);
  if (refused) return { ok: false, ...refused };
  try {
    await d.connector.resumeOnTraffic(t.id);
    const baseUrl = await publishedUrl(d, t.id, t.port);
    return { ok: true, baseUrl, host: guestHost(policy, t.port, h.host) };
  } catch (e) {
    return refusalOf(d, e, t.id);
  }
}

/** An HTTP answer written straight to a socket that left the HTTP server (an upgrade request). */
function rawAnswer(socket: Duplex, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-type: application/json\r\n` +
      `content-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`,
  );
}

/** The status line and headers of `m` as they came (names and order kept), minus `drop`. */
function rawHead(m: IncomingMessage, drop: Set<string> = new Set()): string {
  let s = `HTTP/1.1 ${m.statusCode ?? 502} ${m.statusMessage ?? ''}\r\n`;
  for (let i = 0; i + 1 < m.rawHeaders.length; i += 2) {
    const name = m.rawHeaders[i] ?? '';
    if (!drop.has(name.toLowerCase())) s += `${name}: ${m.rawHeaders[i + 1] ?? ''}\r\n`;
  }
  return s;
}

/** Framing headers of a decoded body: the relay below delimits the body by closing instead. */
const FRAMING = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length']);

/** Forwards an upgrade handshake to the guest port and, once it upgrades, pipes both ways. */
function pipeUpgrade(
  { tunnels, ports }: Pick<PortProxyDeps, 'tunnels' | 'ports'>,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  to: { baseUrl: string; host: string; path: string; id: string; port: number },
): void {
  const target = new URL(to.baseUrl);
  const up = request({
    host: target.hostname,
    port: target.port,
    method: req.method,
    path: to.path,
    headers: { ...req.headers, host: to.host },
    agent: false,
  });
  let answered = false;
  up.on('upgrade', (ures, usock, uhead) => {
    answered = true;
    socket.write(rawHead(ures) + '\r\n');
    if (uhead.length) socket.write(uhead);
    if (head.length) usock.write(head);
    tunnels.add(socket);
    const end = (): void => {
      tunnels.delete(socket);
      socket.destroy();
      usock.destroy();
    };
    usock.on('error', end).on('close', end);
    socket.on('error', end).on('close', end);
    usock.pipe(socket);
    socket.pipe(usock);
  });
  up.on('response', (ures) => {
    // The guest did not upgrade: its answer is relayed as a plain one, and the connection ends.
    answered = true;
    socket.write(rawHead(ures, FRAMING) + 'connection: close\r\n\r\n');
    ures.pipe(socket);
    ures.on('error', () => socket.destroy());
  });
  up.on('error', () => {
    forgetPort({ ports }, to.id, to.port);
    if (answered) socket.destroy();
    else rawAnswer(socket, 502, portClosedBody(to.id, to.port));
  });
  socket.on('close', () => {
    if (!answered) up.destroy();
  });
  up.end();
}

/**
 * The envd proxy's `upgrade` listener: a WebSocket (or other `Upgrade`) request to a published
 * port is forwarded; one to the agent or naming nothing is refused (envd speaks no upgrades).
 */
export function handleUpgrade(d: PortProxyDeps, req: IncomingMessage, socket: Duplex, head: Buffer): void {
  socket.on('error', () => socket.destroy());
  let t: ProxyTarget;
  let path: string;
  try {
    const url = parseTarget(req.url);
    path = url.pathname + url.search;
    t = targetOf(req.headers);
  } catch (e) {
    rawAnswer(socket, 400, { code: 400, message: asKilnError(e).message });
    return;
  }
  if (t.kind !== 'port') {
    const [status, message] =
      t.kind === 'bad'
        ? [t.status, t.message]
        : [
            400,
            'upgrades (WebSocket) reach published ports only: name one by Host {port}-{sandboxId}.<domain> or E2b-Sandbox-Port',
          ];
    rawAnswer(socket, status, {
      code: status,
      message,
      ...(t.kind === 'envd' && t.id ? { sandboxId: t.id } : {}),
    });
    return;
  }
  const { id, port } = t;
  resolvePort(d, t, req.headers)
    .then((r) => {
      if (!r.ok) rawAnswer(socket, r.status, r.body);
      else if (!socket.destroyed) pipeUpgrade(d, req, socket, head, { ...r, path, id, port });
    })
    .catch((e: unknown) => {
      d.log.error({ err: e, sandboxId: id }, 'envd proxy: upgrade failed');
      socket.destroy();
    });
}
