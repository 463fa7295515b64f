/**
 * The request parser both APIs use: typed reads of a JSON body's fields, each refusing a wrong
 * type with `invalid_argument` naming the field.
 *
 * `null`: one rule, stated by each API's spec. A field whose spec says it may be null reads as
 * absent when it is null; any other null is a wrong type. E2B's spec makes every optional
 * request field nullable (its SDK sends `null` for what was not given), so the E2B API parses
 * with `nulls: 'absent'`; docs/openapi.json makes none nullable, so the native API parses with
 * `nulls: 'refused'` (and `{"envs": null}` is answered "must be an object of strings, got null").
 */
import { invalidArgument } from '../core/errors.ts';
import { validateStringMap } from '../core/validate.ts';

export type NullPolicy = 'absent' | 'refused';

const got = (v: unknown): string => `got ${JSON.stringify(v)}`;

/** Typed, optional reads of one JSON object's fields. */
export class Fields {
  readonly #b: Record<string, unknown>;
  readonly #nulls: NullPolicy;

  constructor(body: Record<string, unknown>, nulls: NullPolicy) {
    this.#b = body;
    this.#nulls = nulls;
  }

  /** The raw value; undefined when absent (or null, where null means absent). */
  raw(field: string): unknown {
    const v = this.#b[field];
    return v === null && this.#nulls === 'absent' ? undefined : v;
  }

  has(field: string): boolean {
    return this.raw(field) !== undefined;
  }

  int(field: string): number | undefined {
    const v = this.raw(field);
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v))
      throw invalidArgument(field, `must be an integer, ${got(v)}`);
    return v;
  }

  bool(field: string): boolean | undefined {
    const v = this.raw(field);
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') throw invalidArgument(field, `must be true or false, ${got(v)}`);
    return v;
  }

  string(field: string): string | undefined {
    const v = this.raw(field);
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw invalidArgument(field, `must be a string, ${got(v)}`);
    return v;
  }

  /** An object of strings (metadata, environment variables). */
  stringMap(field: string): Record<string, string> | undefined {
    return validateStringMap(field, this.raw(field));
  }

  /** A nested object, read with the same null rule. */
  object(field: string, expected: string): Fields | undefined {
    const v = this.raw(field);
    if (v === undefined) return undefined;
    if (typeof v !== 'object' || v === null || Array.isArray(v))
      throw invalidArgument(field, `must be ${expected}`);
    return new Fields(v as Record<string, unknown>, this.#nulls);
  }
}

/** A field that must be given: `invalid_argument` "is required" (and `hint`) when it is not. */
export function required<T>(field: string, v: T | undefined, hint = ''): T {
  if (v === undefined) throw invalidArgument(field, `is required${hint}`);
  return v;
}

/** A query parameter `limit` (1..max; `dflt` when absent). */
export function queryLimit(q: URLSearchParams, dflt: number, max: number): number {
  const raw = q.get('limit');
  const limit = raw === null ? dflt : Number(raw);
  if (!Number.isInteger(limit) || limit < 1 || limit > max)
    throw invalidArgument('limit', `must be an integer from 1 to ${max}`);
  return limit;
}

/** A comma- or repeat-separated enum query parameter, each value checked. */
export function queryEnum<T extends string>(
  q: URLSearchParams,
  name: string,
  check: (v: string) => T[] | undefined,
  what: string,
): T[] {
  const out: T[] = [];
  for (const raw of q.getAll(name).flatMap((x) => x.split(','))) {
    const v = check(raw);
    if (!v) throw invalidArgument(name, `"${raw}" is not ${what}`);
    out.push(...v);
  }
  return out;
}
