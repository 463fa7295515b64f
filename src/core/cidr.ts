/**
 * INTERIM (branch i12-egress): the egress proxy's branch (i12-eproxy) owns src/core/cidr.ts;
 * this stand-in holds only what network-parse.ts needs and is replaced by that file at merge.
 */
import { isIPv4, isIPv6 } from 'node:net';

function v6Words(a: string): number[] {
  const [head = '', tail] = a.split('::');
  const part = (s: string): number[] => {
    if (s === '') return [];
    const out: number[] = [];
    for (const w of s.split(':')) {
      if (w.includes('.')) {
        const b = w.split('.').map(Number);
        out.push(((b[0] ?? 0) << 8) | (b[1] ?? 0), ((b[2] ?? 0) << 8) | (b[3] ?? 0));
      } else out.push(parseInt(w, 16));
    }
    return out;
  };
  const h = part(head);
  const t = tail === undefined ? [] : part(tail);
  return [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
}

/** A CIDR or bare address normalised (`a.b.c.d/n`, compressed IPv6, host bits cleared), or undefined. */
export function normaliseCidr(s: string): string | undefined {
  const [addr = '', prefix, extra] = s.split('/');
  if (extra !== undefined) return undefined;
  const v4 = isIPv4(addr);
  if (!v4 && !isIPv6(addr)) return undefined;
  const max = v4 ? 32 : 128;
  if (prefix !== undefined && !/^(0|[1-9][0-9]{0,2})$/.test(prefix)) return undefined;
  const n = prefix === undefined ? max : Number(prefix);
  if (n > max) return undefined;
  if (v4) {
    const b = addr.split('.').map(Number);
    const ip = (((b[0] ?? 0) << 24) | ((b[1] ?? 0) << 16) | ((b[2] ?? 0) << 8) | (b[3] ?? 0)) >>> 0;
    const m = n === 0 ? 0 : (ip & (~0 << (32 - n))) >>> 0;
    return `${[m >>> 24, (m >>> 16) & 255, (m >>> 8) & 255, m & 255].join('.')}/${n}`;
  }
  const words = v6Words(addr.toLowerCase()).map((w, i) => {
    const bits = Math.min(16, Math.max(0, n - i * 16));
    return bits === 0 ? 0 : w & ((0xffff << (16 - bits)) & 0xffff);
  });
  const host = new URL(`http://[${words.map((w) => w.toString(16)).join(':')}]`).hostname;
  return `${host.slice(1, -1)}/${n}`;
}

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/**
 * A domain name (`example.com`) or a wildcard (`*.example.com`) lowercased without a trailing
 * dot, or undefined. The last label must hold a letter (so `1.2.3` is not a name); a bare `*` is not.
 */
export function normaliseDomainPattern(s: string): string | undefined {
  let d = s.toLowerCase();
  if (d.endsWith('.')) d = d.slice(0, -1);
  const wild = d.startsWith('*.');
  const name = wild ? d.slice(2) : d;
  if (name.length === 0 || name.length > 253) return undefined;
  const labels = name.split('.');
  if (!labels.every((l) => LABEL.test(l))) return undefined;
  if (!/[a-z]/.test(labels.at(-1) ?? '')) return undefined;
  return wild ? `*.${name}` : name;
}
