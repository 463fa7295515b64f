/**
 * What the daemon needs of sandbox networks (src/net implements it with network namespaces and
 * nftables; the composition root, api/kilnd.ts, picks it). Every VM the daemon starts runs in a
 * slot of its own (`startVm`), released when the VM ends (`killVm`); start-up reconciliation
 * destroys every slot no live VM explains.
 */
import type { EgressRules } from '../core/network-policy.ts';

export interface NetworkProvider {
  /** A slot with `rules` loaded, for new VM `owner`: where it runs and where the host reaches it. */
  acquire(rules: EgressRules, owner: string): Promise<{ namespace: string; address: string }>;
  /** Replaces the rules of the slot at `namespace` atomically. */
  apply(namespace: string, rules: EgressRules): Promise<void>;
  /** Destroys the slot at `namespace` (gone already is fine). */
  release(namespace: string): Promise<void>;
  /**
   * Start-up: destroys every slot but those of `inUse` (reloading their rules), then makes slots
   * ahead of need.
   */
  reconcile(
    inUse: readonly { namespace: string; owner: string; rules: EgressRules }[],
  ): Promise<{ removed: number }>;
}

/** Rules for a VM that must reach nothing (template builds, internal helper VMs). */
export const CLOSED_EGRESS: EgressRules = { allowOut: [], denyOut: [], internet: false };

/**
 * Isolation is wanted but this host cannot give it (kilnd is not root, a tool is missing): every
 * VM start fails with `why` (which names the fix and the opt-out), nothing else does.
 */
export function unavailableNetworks(why: Error): NetworkProvider {
  return {
    acquire: () => Promise.reject(why),
    apply: () => Promise.reject(why),
    release: () => Promise.resolve(),
    reconcile: () => Promise.resolve({ removed: 0 }),
  };
}
