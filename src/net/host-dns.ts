import { readFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';

/**
 * The resolver guests' DNS goes to when none is configured (KILN_DNS): the first IPv4 nameserver
 * of the host's resolv.conf that a sandbox namespace can reach (not loopback: a namespace has its
 * own), else of systemd-resolved's upstream list (a host whose resolv.conf names its local stub,
 * 127.0.0.53). Undefined when there is none; guests then resolve nothing.
 */
export function hostResolver(
  files: readonly string[] = ['/etc/resolv.conf', '/run/systemd/resolve/resolv.conf'],
): string | undefined {
  for (const f of files) {
    const ns = firstNameserver(f);
    if (ns) return ns;
  }
  return undefined;
}

function firstNameserver(resolvConf: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(resolvConf, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (m?.[1] && isIPv4(m[1]) && !m[1].startsWith('127.')) return m[1];
  }
  return undefined;
}
