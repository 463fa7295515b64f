/** Small statistics and the command line shared by the benchmarks. */
import { parseArgs } from 'node:util';

type Option = { type: 'string'; default: string } | { type: 'boolean'; default: boolean };
export type BenchArgs<K extends string> = Record<K, number> & { json: boolean };

/**
 * The bench's command line: `--json` and one count per name (`--runs N`, ...), each defaulting to
 * its value in `counts`. Unknown options are refused.
 */
export function benchArgs<K extends string>(counts: Record<K, number>): BenchArgs<K> {
  const options: Record<string, Option> = { json: { type: 'boolean', default: false } };
  for (const [k, v] of Object.entries<number>(counts)) options[k] = { type: 'string', default: String(v) };
  const { values } = parseArgs({ options });
  const out = { json: values['json'] === true } as BenchArgs<K>;
  for (const k of Object.keys(counts) as K[]) out[k] = Number(values[k]) as BenchArgs<K>[K];
  return out;
}

/** The median. */
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
