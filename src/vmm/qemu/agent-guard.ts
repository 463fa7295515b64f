import { KilnError } from '../../core/errors.ts';
import { run } from '../../core/exec.ts';
import { FORWARD_NET } from './args.ts';

/** kiln's own nftables table; nothing else is ever touched. */
export const GUARD_TABLE = 'kiln_agent_guard';

export interface AgentGuardOpts {
  /** The uid allowed to connect to guest agents: kilnd's own. */
  uid: number;
  /** The block guest ports are forwarded on (default FORWARD_NET, 127.77.0.0/16). */
  net?: string;
  nftBinary?: string;
}

/**
 * The nftables script of the guard: in kiln's own table, a rule on the output hook that answers
 * a TCP reset to every connection attempt (SYN) to the forward block from a socket whose owner
 * is not kilnd's uid. Applied as one `nft -f` transaction: the table is declared, flushed and
 * refilled, so repeating it (every kilnd start, several kilnds on one host) leaves exactly one
 * copy of the rule and never a moment without it.
 */
export function agentGuardRuleset(o: { uid: number; net: string }): string {
  if (!Number.isInteger(o.uid) || o.uid < 0) throw new TypeError(`uid must be a non-negative integer`);
  if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}\/\d{1,2}$/.test(o.net))
    throw new TypeError(`net must be an IPv4 loopback block (127.x.y.z/n), got "${o.net}"`);
  return [
    `table inet ${GUARD_TABLE}`,
    `flush table inet ${GUARD_TABLE}`,
    `table inet ${GUARD_TABLE} {`,
    `\tchain output {`,
    `\t\ttype filter hook output priority filter; policy accept;`,
    `\t\tip daddr ${o.net} tcp flags & (syn | ack) == syn meta skuid != ${o.uid} counter reject with tcp reset comment "kiln: only kilnd's uid connects to guest agents"`,
    `\t}`,
    `}`,
    '',
  ].join('\n');
}

/**
 * Keeps every local user but kilnd's off the guest agents' forwarded ports (a guest agent before
 * its first /init holds only the template's bootstrap token, and a stranger's connections must
 * not compete with kilnd's). Idempotent; left in place when kilnd stops (other kilnds on the
 * host share it). Needs `nft` (Debian's nftables) and CAP_NET_ADMIN: otherwise `missing_tool`
 * or `driver_error` naming what to do.
 */
export async function applyAgentGuard(o: AgentGuardOpts): Promise<void> {
  const nft = o.nftBinary ?? 'nft';
  const script = agentGuardRuleset({ uid: o.uid, net: o.net ?? FORWARD_NET });
  try {
    await run(nft, ['-f', '-'], { input: script, failCode: 'driver_error' });
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new KilnError(
      e instanceof KilnError && e.code === 'missing_tool' ? 'missing_tool' : 'driver_error',
      `cannot install the guest agent port guard (nftables table inet ${GUARD_TABLE}): ${why}. ` +
        'kilnd needs nft (apt-get install nftables) and root (CAP_NET_ADMIN) to keep other local users off guest agents; ' +
        'set KILN_AGENT_GUARD=off only on a host where every local user is trusted',
      { cause: e },
    );
  }
}
