/** Small statistics and the command line shared by the benchmarks. */
import { parseArgs } from 'node:util';

/**
 * The bench's command line: `--json` and one count per name (`--runs N`, ...), each defaulting to
 * its value in `counts`. Unknown options are refused.
 */
export function benchArgs<K extends string>(
  counts: Record<K, number>,
): Record<K, number> & { json: boolean } {
  const options: Record<string, { type: 'string'; default: string } | { type: 'boolean'; default: boolean }> =
    {
      json: { type: 'boolean', default: false },
    };
  for (const [k, v] of Object.entries<number>(counts)) options[k] = { type: 'string', default: String(v) };
  const { values } = parseArgs({ options });
  const out = { json: values['json'] === true } as Record<K, number> & { json: boolean };
  for (const k of Object.keys(counts) as K[])
    out[k] = Number(values[k]) as (Record<K, number> & { json: boolean })[K];
  return out;
}
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] ?? 0) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
}

/** The p-th percentile (nearest rank). */
export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0;
}
