import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import { KilnError } from '../../core/errors.ts';
import { run } from '../../core/exec.ts';
import { FORWARD_NET } from './args.ts';

/** The prefix of kiln's nftables tables; nothing else is ever touched. */
export const GUARD_TABLE_PREFIX = 'kiln_agent_guard_';

/**
 * The guard table of the kilnd whose state (or run) directory is `dir`: one table per instance,
 * named by a short hash of the directory's absolute path, so that two kilnds on one host (two
 * test runs, a user's own) never flush or delete each other's table.
 */
export function agentGuardTable(dir: string): string {
  return GUARD_TABLE_PREFIX + createHash('sha256').update(resolve(dir)).digest('hex').slice(0, 12);
}

export interface AgentGuardOpts {
  /** The table: `agentGuardTable(<state dir>)`. */
  table: string;
  /** The uid allowed to connect to guest agents: kilnd's own. */
  uid: number;
  /** The block guest ports are forwarded on (default FORWARD_NET, 127.77.0.0/16). */
  net?: string;
  nftBinary?: string;
}

function checkTable(table: string): void {
  if (!new RegExp(`^${GUARD_TABLE_PREFIX}[0-9a-f]{12}$`).test(table))
    throw new TypeError(`table must be ${GUARD_TABLE_PREFIX}<12 hex digits>, got "${table}"`);
}

/**
 * The nftables script of the guard: in the instance's own table, a rule on the output hook that
 * answers a TCP reset to every connection attempt (SYN) to the forward block from a socket whose
 * owner is not kilnd's uid. Applied as one `nft -f` transaction: the table is declared, flushed
 * and refilled, so repeating it (every start of the same kilnd) leaves exactly one copy of the
 * rule and never a moment without it.
 */
export function agentGuardRuleset(o: { table: string; uid: number; net: string }): string {
  checkTable(o.table);
  if (!Number.isInteger(o.uid) || o.uid < 0) throw new TypeError(`uid must be a non-negative integer`);
  if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}\/\d{1,2}$/.test(o.net))
    throw new TypeError(`net must be an IPv4 loopback block (127.x.y.z/n), got "${o.net}"`);
  return [
    `table inet ${o.table}`,
    `flush table inet ${o.table}`,
    `table inet ${o.table} {`,
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
 * not compete with kilnd's). Idempotent. Needs `nft` (Debian's nftables) and CAP_NET_ADMIN:
 * otherwise `missing_tool` or `driver_error` naming what to do.
 */
export async function applyAgentGuard(o: AgentGuardOpts): Promise<void> {
  const nft = o.nftBinary ?? 'nft';
  const script = agentGuardRuleset({ table: o.table, uid: o.uid, net: o.net ?? FORWARD_NET });
  try {
    await run(nft, ['-f', '-'], { input: script, failCode: 'driver_error' });
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new KilnError(
      e instanceof KilnError && e.code === 'missing_tool' ? 'missing_tool' : 'driver_error',
      `cannot install the guest agent port guard (nftables table inet ${o.table}): ${why}. ` +
        'kilnd needs nft (apt-get install nftables) and root (CAP_NET_ADMIN) to keep other local users off guest agents; ' +
        'set KILN_AGENT_GUARD=off only on a host where every local user is trusted',
      { cause: e },
    );
  }
}

/**
 * Deletes this instance's guard table (its owner calls it, when it stops with no VM left: VMs
 * outlive kilnd and stay guarded). A table that is already gone is fine.
 */
export async function removeAgentGuard(o: { table: string; nftBinary?: string }): Promise<void> {
  checkTable(o.table);
  try {
    await run(o.nftBinary ?? 'nft', ['delete', 'table', 'inet', o.table], { failCode: 'driver_error' });
  } catch (e) {
    if (e instanceof Error && /No such file or directory|does not exist/i.test(e.message)) return;
    throw e;
  }
}
