import { readFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';

/**
 * The resolver guests' DNS goes to when none is configured (KILN_DNS): the first IPv4 nameserver
 * of the host's resolv.conf that a sandbox namespace can reach (not loopback: a namespace has its
 * own). Undefined when there is none; guests then resolve nothing.
 */
export function hostResolver(resolvConf = '/etc/resolv.conf'): string | undefined {
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
