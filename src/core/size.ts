/**
 * The one parser of sizes people type (`--memory 1G`, `--disk 20G`, `512M`), like banger's
 * ParseSize: a whole or decimal number and an optional binary unit (K, M, G, T; `KiB`, `MB`, `G`
 * and `GiB` all mean powers of 1024). A bare number is in `defaultUnit`.
 */
import { invalidArgument } from './errors.ts';

const UNITS: Record<string, number> = { B: 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

export type SizeUnit = 'B' | 'K' | 'M' | 'G' | 'T';

/**
 * Bytes of `text` (e.g. "1G", "512M", "1.5GiB", "2048" with `defaultUnit` M). `invalid_argument`
 * naming `field` for anything else: empty, negative, zero, an unknown unit, a fraction of a byte.
 */
export function parseSize(field: string, text: string, defaultUnit: SizeUnit = 'B'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (!m)
    throw invalidArgument(field, `"${text}" is not a size: write a number and a unit, e.g. 512M, 1G, 20G`);
  const unitText = (m[2] ?? '').toUpperCase();
  const unit = unitText === '' ? defaultUnit : unitText.replace(/I?B$/, '') || 'B';
  const mult = UNITS[unit];
  if (mult === undefined)
    throw invalidArgument(
      field,
      `"${text}" has an unknown unit "${m[2] ?? ''}": use K, M, G or T (powers of 1024)`,
    );
  const bytes = Number(m[1]) * mult;
  if (!Number.isSafeInteger(bytes)) throw invalidArgument(field, `"${text}" is not a whole number of bytes`);
  if (bytes === 0) throw invalidArgument(field, `"${text}" is zero; give a positive size`);
  return bytes;
}

/**
 * `parseSize` in whole MiB (memory and disk sizes): `invalid_argument` for a part of a MiB, and
 * for a size outside `range` (MiB), said in the units people type.
 */
export function parseSizeMiB(field: string, text: string, range?: { min: number; max: number }): number {
  const bytes = parseSize(field, text, 'M');
  if (bytes % 2 ** 20 !== 0) throw invalidArgument(field, `"${text}" is not a whole number of MiB`);
  const mib = bytes / 2 ** 20;
  if (range && (mib < range.min || mib > range.max))
    throw invalidArgument(
      field,
      `"${text}" is ${formatMiB(mib)}: it must be from ${formatMiB(range.min)} to ${formatMiB(range.max)}`,
    );
  return mib;
}

/** MiB as people write it: `512M`, `1G`, `1536M`, `256G`. */
export function formatMiB(mib: number): string {
  return mib % 1024 === 0 ? `${mib / 1024}G` : `${mib}M`;
}
