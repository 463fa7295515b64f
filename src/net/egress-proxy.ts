/**
 * The egress proxy (issue 12): a transparent TCP proxy kilnd runs so that a sandbox's domain
 * rules hold. A sandbox's namespace DNATs the guest's TCP to ports 80 and 443 here (one listener
 * per mode, because the original port is not visible after DNAT); the proxy names the sandbox by
 * the connection's source address, reads the destination name (HTTP Host / TLS SNI, core of
 * sniff.ts), decides with egressDecision, resolves the name itself and re-checks every address,
 * then connects to the first allowed address on the mode's port and relays bytes both ways.
 *
 * Invariants: every accepted socket is destroyed on every path (errors, deadlines, close());
 * the guest's bytes are never forwarded before the decision; a name is resolved only when a
 * domain rule allows it or the rules do not deny by default (kilnd's resolver is not a covert
 * channel for a sandbox without internet). Limit: only the first request of a kept-alive HTTP
 * connection is inspected, and SNI is not checked against the certificate (domain fronting);
 * E2B's SNI proxy shares both limits.
 */

import { Resolver } from 'node:dns/promises';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { canonicalAddress, canonicalHostName } from '../core/cidr.ts';
import type { EgressRules } from '../core/network-policy.ts';
import { domainPrecheck, egressDecision, type EgressDecision } from './egress-policy.ts';
import { sniffHttp, sniffTls, type Sniffed } from './sniff.ts';

export type EgressProxyMode = 'http' | 'tls';

/** The sandbox behind a source address, and its rules at this moment. */
export interface EgressSource {
  sandboxId: string;
  egress: EgressRules;
}

/** One decision, for the sandbox's event log. `host` is '' when none could be read. */
export interface EgressProxyDecision {
  sandboxId: string;
  mode: EgressProxyMode;
  host: string;
  allowed: boolean;
  reason: string;
}

/** Resolves a host name to its addresses (IPv4 first); rejects when the name does not resolve. */
export type EgressResolver = (host: string) => Promise<string[]>;

export interface EgressProxyOpts {
  /** Address to listen on (default 127.0.0.1). */
  host?: string;
  /** Listening ports per mode; 0 (the default) = any free port. */
  ports?: Partial<Record<EgressProxyMode, number>>;
  /** The sandbox behind a source address (IPv4-mapped addresses are given as IPv4). */
  lookup(remoteAddress: string): EgressSource | undefined;
  /** DNS servers for the default resolver (`ip` or `ip:port`); empty = the host's. */
  dnsServers?: string[];
  /** Replaces the default resolver (tests). */
  resolve?: EgressResolver;
  onDecision?(decision: EgressProxyDecision): void;
  /** A listener's error after it started (e.g. EMFILE on accept); the listener keeps running. */
  onError?(error: Error): void;
  /** Destination port per mode (default http 80, tls 443; tests point them elsewhere). */
  upstreamPorts?: Partial<Record<EgressProxyMode, number>>;
  /** How long the guest has to send a whole request head / ClientHello (default 10 s). */
  headTimeoutMs?: number;
  /** The most bytes read before a decision (default 16 KiB). */
  maxHeadBytes?: number;
  /** Connections a listener holds at most (default 1024; each costs two descriptors). */
  maxConnections?: number;
  /** Connections one sandbox holds at most across both listeners (default 256). */
  maxConnectionsPerSandbox?: number;
  /** Per-address connect deadline (default 10 s); DNS has the same deadline. */
  connectTimeoutMs?: number;
}

const DEFAULTS = {
  headTimeoutMs: 10_000,
  maxHeadBytes: 16 * 1024,
  connectTimeoutMs: 10_000,
  maxConnections: 1024,
  maxConnectionsPerSandbox: 256,
};
const UPSTREAM_PORTS: Record<EgressProxyMode, number> = { http: 80, tls: 443 };
const SNIFF: Record<EgressProxyMode, (b: Buffer) => Sniffed> = { http: sniffHttp, tls: sniffTls };
/** How long a refused HTTP guest has to read the 403 before its socket is destroyed. */
const REFUSAL_GRACE_MS = 2_000;

/** The default resolver: node:dns with `servers` (A then AAAA, each bounded by `timeoutMs`). */
export function dnsResolver(servers: readonly string[], timeoutMs: number): EgressResolver {
  const resolver = new Resolver({ timeout: timeoutMs, tries: 2 });
  if (servers.length > 0) resolver.setServers([...servers]);
  return async (host) => {
    const [a, aaaa] = await Promise.allSettled([resolver.resolve4(host), resolver.resolve6(host)]);
    const out = [
      ...(a.status === 'fulfilled' ? a.value : []),
      ...(aaaa.status === 'fulfilled' ? aaaa.value : []),
    ];
    if (out.length === 0 && a.status === 'rejected') throw a.reason;
    return out;
  };
}

interface Settings {
  opts: EgressProxyOpts;
  resolve: EgressResolver;
  headTimeoutMs: number;
  maxHeadBytes: number;
  connectTimeoutMs: number;
}

/** A running proxy: one listener per mode. Create with {@link EgressProxy.start}. */
export class EgressProxy {
  private readonly sockets = new Set<Socket>();
  /** Open guest connections per sandbox id. */
  private readonly perSandbox = new Map<string, number>();
  private idleWaiters: (() => void)[] = [];
  private readonly settings: Settings;
  private readonly servers: Record<EgressProxyMode, Server>;

  private constructor(settings: Settings, servers: Record<EgressProxyMode, Server>) {
    this.settings = settings;
    this.servers = servers;
  }

  /** Starts both listeners; rejects (closing whatever started) when one cannot listen. */
  static async start(opts: EgressProxyOpts): Promise<EgressProxy> {
    const connectTimeoutMs = opts.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs;
    const settings: Settings = {
      opts,
      resolve: opts.resolve ?? dnsResolver(opts.dnsServers ?? [], connectTimeoutMs),
      headTimeoutMs: opts.headTimeoutMs ?? DEFAULTS.headTimeoutMs,
      maxHeadBytes: opts.maxHeadBytes ?? DEFAULTS.maxHeadBytes,
      connectTimeoutMs,
    };
    const make = (): Server => {
      const server = createServer({ allowHalfOpen: true, pauseOnConnect: true });
      server.maxConnections = opts.maxConnections ?? DEFAULTS.maxConnections;
      return server;
    };
    const proxy = new EgressProxy(settings, { http: make(), tls: make() });
    try {
      for (const mode of ['http', 'tls'] as const) await proxy.listen(mode);
    } catch (e) {
      await proxy.close();
      throw e;
    }
    return proxy;
  }

  private async listen(mode: EgressProxyMode): Promise<void> {
    const server = this.servers[mode];
    server.on('connection', (socket) => {
      this.track(socket);
      void this.handle(mode, socket).catch(() => socket.destroy());
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.settings.opts.ports?.[mode] ?? 0, this.settings.opts.host ?? '127.0.0.1', () => {
        server.off('error', reject);
        // An unhandled 'error' on a server (accept failing) would end kilnd.
        server.on('error', (e) => this.settings.opts.onError?.(e));
        resolve();
      });
    });
  }

  /** The port a mode listens on. */
  port(mode: EgressProxyMode): number {
    const a = this.servers[mode].address();
    if (a === null || typeof a === 'string')
      throw new Error(`egress proxy ${mode} listener is not listening`);
    return a.port;
  }

  /** Sockets open now, guest and upstream sides together (0 when idle: nothing leaks). */
  get openSockets(): number {
    return this.sockets.size;
  }

  /** Resolves once no socket is open (at once when none is). */
  whenIdle(): Promise<void> {
    if (this.sockets.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops listening and destroys every open connection. */
  async close(): Promise<void> {
    const closing = Object.values(this.servers).map(
      (s) =>
        new Promise<void>((resolve) => {
          if (s.listening)
            s.close(() => {
              resolve();
            });
          else resolve();
        }),
    );
    for (const s of this.sockets) s.destroy();
    await Promise.all(closing);
  }

  private track(socket: Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => {
      this.sockets.delete(socket);
      if (this.sockets.size > 0) return;
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    });
    // A socket error never escapes: the socket is destroyed and its peer with it (see relay).
    socket.on('error', () => socket.destroy());
  }

  private async handle(mode: EgressProxyMode, guest: Socket): Promise<void> {
    const source = lookupSafe(this.settings.opts, guest.remoteAddress);
    if (!source) {
      guest.destroy();
      return;
    }
    if (!this.admit(source.sandboxId, guest)) {
      guest.destroy();
      return;
    }
    const report = (host: string, d: Pick<EgressDecision, 'allowed' | 'reason'>): void => {
      try {
        this.settings.opts.onDecision?.({
          sandboxId: source.sandboxId,
          mode,
          host,
          allowed: d.allowed,
          reason: d.reason,
        });
      } catch {
        // The reporter's failure must not change the connection's fate.
      }
    };
    const head = await readHead(guest, SNIFF[mode], this.settings);
    if (head.kind !== 'host') {
      report('', { allowed: false, reason: head.reason });
      refuse(mode, guest, '', head.reason);
      return;
    }
    const decision = await this.decide(source.egress, head.host);
    report(head.host, decision);
    if (!decision.allowed) {
      refuse(mode, guest, head.host, decision.reason);
      return;
    }
    const upstream = await this.connectFirst(decision.addresses, this.upstreamPort(mode), guest);
    if (!upstream) {
      refuse(mode, guest, head.host, `no address of ${head.host} accepted a connection`, 502);
      return;
    }
    relay(guest, upstream, head.bytes);
  }

  /** Counts the guest connection against its sandbox's cap; false when the cap is reached. */
  private admit(sandboxId: string, guest: Socket): boolean {
    const open = this.perSandbox.get(sandboxId) ?? 0;
    if (open >= (this.settings.opts.maxConnectionsPerSandbox ?? DEFAULTS.maxConnectionsPerSandbox))
      return false;
    this.perSandbox.set(sandboxId, open + 1);
    guest.once('close', () => {
      const left = (this.perSandbox.get(sandboxId) ?? 1) - 1;
      if (left > 0) this.perSandbox.set(sandboxId, left);
      else this.perSandbox.delete(sandboxId);
    });
    return true;
  }

  private upstreamPort(mode: EgressProxyMode): number {
    return this.settings.opts.upstreamPorts?.[mode] ?? UPSTREAM_PORTS[mode];
  }

  /** The decision for a host from the wire: an IP literal as an address, a name via DNS. */
  private async decide(rules: EgressRules, host: string): Promise<EgressDecision> {
    const literal = canonicalAddress(host);
    if (literal !== undefined) return egressDecision(rules, { address: literal });
    const name = canonicalHostName(host);
    if (name === undefined) return { allowed: false, reason: `"${host}" is not a host name`, addresses: [] };
    const early = domainPrecheck(rules, name);
    if (early) return early;
    let addresses: string[];
    try {
      addresses = await withDeadline(this.settings.resolve(name), this.settings.connectTimeoutMs);
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      const why = typeof code === 'string' ? code : e instanceof Error ? e.message : 'failed';
      return { allowed: false, reason: `${name}: could not resolve (${why})`, addresses: [] };
    }
    return egressDecision(rules, { domain: name, addresses });
  }

  /** Connects to each address in turn; undefined when none answers or the guest went away. */
  private async connectFirst(addresses: string[], port: number, guest: Socket): Promise<Socket | undefined> {
    for (const address of addresses) {
      if (guest.destroyed) return undefined;
      const upstream = connect({ host: address, port, allowHalfOpen: true });
      this.track(upstream);
      const outcome = await new Promise<'connected' | 'failed' | 'guest-gone'>((resolve) => {
        const done = (v: 'connected' | 'failed' | 'guest-gone') => () => {
          clearTimeout(timer);
          guest.off('close', gone);
          resolve(v);
        };
        const gone = done('guest-gone');
        const timer = setTimeout(done('failed'), this.settings.connectTimeoutMs);
        upstream.once('connect', done('connected'));
        upstream.once('error', done('failed'));
        guest.once('close', gone);
      });
      if (outcome === 'connected') return upstream;
      upstream.destroy();
      if (outcome === 'guest-gone') return undefined;
    }
    return undefined;
  }
}

function lookupSafe(opts: EgressProxyOpts, remote: string | undefined): EgressSource | undefined {
  const address = canonicalAddress(remote ?? '');
  if (address === undefined) return undefined;
  try {
    return opts.lookup(address);
  } catch {
    return undefined;
  }
}

type Head = { kind: 'host'; host: string; bytes: Buffer } | { kind: 'refuse'; reason: string };

/** Reads until `sniff` answers, within the deadline and the size cap; leaves the guest paused. */
function readHead(guest: Socket, sniff: (b: Buffer) => Sniffed, s: Settings): Promise<Head> {
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    const finish = (h: Head): void => {
      clearTimeout(timer);
      guest.off('data', onData);
      guest.off('end', onEnd);
      guest.off('close', onEnd);
      guest.pause();
      resolve(h);
    };
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      const r = sniff(buf.subarray(0, s.maxHeadBytes));
      if (r.kind === 'host') finish({ kind: 'host', host: r.host, bytes: buf });
      else if (r.kind === 'refuse') finish(r);
      else if (buf.length >= s.maxHeadBytes) {
        finish({ kind: 'refuse', reason: `no complete request head in the first ${s.maxHeadBytes} bytes` });
      }
    };
    const onEnd = (): void => {
      finish({ kind: 'refuse', reason: 'the connection closed before a request head' });
    };
    const timer = setTimeout(() => {
      finish({ kind: 'refuse', reason: `no complete request head within ${s.headTimeoutMs} ms` });
    }, s.headTimeoutMs);
    guest.on('data', onData);
    guest.once('end', onEnd);
    guest.once('close', onEnd);
    guest.resume();
  });
}

/**
 * Ends a refused connection. HTTP gets a status line and a one-line body naming the host and the
 * reason; the guest then has a short grace to read it before the socket is destroyed (the rest of
 * what it sends is drained, so the answer is not lost to a reset). TLS is simply closed.
 */
function refuse(mode: EgressProxyMode, guest: Socket, host: string, reason: string, status = 403): void {
  if (mode === 'tls' || guest.destroyed) {
    guest.destroy();
    return;
  }
  const body = `kiln egress: ${host || 'request'} refused: ${reason.replace(/[\r\n]/g, ' ')}\n`;
  const title = status === 403 ? 'Forbidden' : 'Bad Gateway';
  const head = `HTTP/1.1 ${status} ${title}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n`;
  const timer = setTimeout(() => guest.destroy(), REFUSAL_GRACE_MS);
  guest.once('close', () => {
    clearTimeout(timer);
  });
  guest.once('end', () => guest.destroy());
  guest.resume();
  guest.end(head + body);
}

/**
 * Relays bytes both ways with backpressure (pipe) and half-close (allowHalfOpen on both sides:
 * one side's FIN becomes the other's end()). An error or an abrupt close on either side destroys
 * both; a clean close leaves the other side to finish flushing, after which it closes itself.
 */
function relay(guest: Socket, upstream: Socket, head: Buffer): void {
  const kill = (): void => {
    guest.destroy();
    upstream.destroy();
  };
  for (const s of [guest, upstream]) {
    s.on('error', kill);
    s.on('close', (hadError) => {
      if (hadError || !s.readableEnded) kill();
    });
  }
  upstream.write(head);
  guest.pipe(upstream);
  upstream.pipe(guest);
}

function withDeadline<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(Object.assign(new Error(`no answer in ${ms} ms`), { code: 'ETIMEOUT' }));
    }, ms);
  });
  return Promise.race([p, deadline]).finally(() => {
    clearTimeout(timer);
  });
}
