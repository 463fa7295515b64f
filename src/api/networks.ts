/**
 * Picks the sandbox networks of a kilnd (composition root, like the driver): isolated namespaces
 * (src/net) by default; when the host cannot give them, a provider whose every VM start fails
 * naming the fix; none at all when the user opted out (KILN_NETWORK=unisolated).
 */
import type { Logger } from 'pino';
import type { UndoStack } from '../core/undo.ts';
import { unavailableNetworks, type NetworkProvider } from '../daemon/networks.ts';
import { ALWAYS_DENIED } from '../core/cidr.ts';
import { EgressProxy } from '../net/egress-proxy.ts';
import { hostResolver } from '../net/host-dns.ts';
import { SandboxNetworks } from '../net/sandbox-networks.ts';

export interface NetworkOpts {
  mode: 'isolated' | 'unisolated';
  /** KILN_NET_POOL (default 10.231.0.0/16). */
  pool?: string | undefined;
  /** KILN_DNS (default: the host's first non-loopback nameserver). */
  dns?: string | undefined;
  /** Slots kept ready (default 2). */
  ready?: number;
}

export const DEFAULT_NET_POOL = '10.231.0.0/16';

/**
 * The egress proxy domain rules go through: it listens on every address (each slot reaches it on
 * its own gateway address; the host table admits its ports from sandbox links only) and decides
 * by the rules loaded in the connection's slot, resolving names with the sandboxes' resolver.
 */
export async function startEgressProxy(
  nets: SandboxNetworks,
  dnsServers: string[],
  log: Logger,
  undo: UndoStack,
): Promise<void> {
  const plog = log.child({ component: 'egress-proxy' });
  const proxy = await EgressProxy.start({
    host: '0.0.0.0',
    lookup: (addr) => {
      const p = nets.peer(addr);
      return p ? { sandboxId: p.owner, egress: p.rules } : undefined;
    },
    dnsServers,
    onDecision: (d) => {
      plog.info(d, d.allowed ? 'egress allowed' : 'egress refused');
    },
    onError: (e) => {
      plog.warn({ err: e }, 'egress proxy listener error');
    },
  });
  undo.push('close the egress proxy', () => proxy.close());
  await nets.setProxy({ http: proxy.port('http'), tls: proxy.port('tls') });
}

export async function openNetworks(
  stateDir: string,
  o: NetworkOpts,
  log: Logger,
  undo: UndoStack,
): Promise<{ networks: NetworkProvider | undefined; isolated: SandboxNetworks | undefined }> {
  if (o.mode === 'unisolated') {
    log.warn("KILN_NETWORK=unisolated: sandboxes share this host's network and reach its loopback services");
    return { networks: undefined, isolated: undefined };
  }
  const dns = o.dns ?? hostResolver();
  try {
    const nets = await SandboxNetworks.open({
      stateDir,
      pool: o.pool ?? DEFAULT_NET_POOL,
      dns,
      alwaysDenied: ALWAYS_DENIED.map((r) => r.cidr),
      uid: process.getuid?.() ?? 0,
      log,
      ...(o.ready === undefined ? {} : { ready: o.ready }),
    });
    undo.push('close the sandbox networks', () => nets.close());
    await startEgressProxy(nets, dns ? [dns] : [], log, undo);
    return { networks: nets, isolated: nets };
  } catch (e) {
    log.error({ err: e }, 'sandbox network isolation is not available: creates will fail');
    return { networks: unavailableNetworks(e as Error), isolated: undefined };
  }
}
