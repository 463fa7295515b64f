/** Argument helpers shared by the command groups. No side effects at import. */
import { invalidArgument } from '../core/errors.ts';

/** Bad usage: printed with the usage text, exit 2. */
export class UsageError extends Error {}

export function pairs(field: string, list: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of list) {
    const i = p.indexOf('=');
    if (i <= 0) throw invalidArgument(field, `"${p}" must be KEY=VALUE`);
    out[p.slice(0, i)] = p.slice(i + 1);
  }
  return out;
}

export function intArg(field: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^-?\d+$/.test(text.trim())) throw invalidArgument(field, `must be an integer, got "${text}"`);
  return Number(text);
}

/** The options a new sandbox takes from --metadata, --env and --timeout. */
export function createOptions(v: { metadata: string[]; env: string[]; timeout?: string | undefined }): {
  metadata: Record<string, string>;
  envVars: Record<string, string>;
  timeoutS?: number;
} {
  const timeoutS = intArg('timeout', v.timeout);
  return {
    metadata: pairs('metadata', v.metadata),
    envVars: pairs('env', v.env),
    ...(timeoutS === undefined ? {} : { timeoutS }),
  };
}

/** Splits `args -- cmd...` into the options part and the command words. */
export function splitCommand(argv: string[]): [string[], string[]] {
  const i = argv.indexOf('--');
  return i < 0 ? [argv, []] : [argv.slice(0, i), argv.slice(i + 1)];
}

export const shellJoin = (words: string[]): string =>
  words.length === 1
    ? (words[0] ?? '')
    : words.map((w) => (/^[\w@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`)).join(' ');
