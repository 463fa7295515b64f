/**
 * kiln's error catalog. Every error kiln raises on purpose is a {@link KilnError} with a stable
 * string `code` from {@link ERROR_CODES}; transports map the code (never the message) to a status.
 * docs/ERRORS.md lists the same codes; a unit test keeps the two in agreement.
 */

/** Stable codes, their HTTP status and what they mean. Append only: codes are API. */
export const ERROR_CODES = {
  invalid_argument: { status: 400, summary: 'A parameter is malformed or out of range.' },
  unauthenticated: { status: 401, summary: 'The request carries no valid credentials (API key).' },
  not_found: { status: 404, summary: 'The named object does not exist.' },
  already_exists: { status: 409, summary: 'An object with that name or id already exists.' },
  invalid_state: { status: 409, summary: 'The object is not in a state where the action is legal.' },
  conflict: { status: 409, summary: 'Another operation holds the object; retry later.' },
  timeout: { status: 504, summary: 'The action did not finish in time.' },
  capacity: { status: 507, summary: 'The host lacks the resources (memory, disk) for the action.' },
  missing_tool: { status: 500, summary: 'A host program kiln needs is not installed.' },
  permission_denied: { status: 403, summary: 'The host refused an action kiln needs (run as root?).' },
  no_space: { status: 507, summary: 'Not enough free disk space.' },
  image_build_failed: {
    status: 500,
    summary: 'Building a guest image failed; the message says at which step.',
  },
  driver_error: { status: 502, summary: 'The hypervisor (QEMU) failed or answered unexpectedly.' },
  guest_agent_error: { status: 502, summary: 'The guest agent did not answer or answered with an error.' },
  cancelled: { status: 499, summary: 'The caller cancelled the action.' },
  internal: { status: 500, summary: 'A bug in kiln; the message and op id help to report it.' },
  forbidden: {
    status: 403,
    summary: 'The caller is known but may not do this (a dashboard action without its CSRF token).',
  },
} as const satisfies Record<string, { status: number; summary: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface KilnErrorOpts {
  cause?: unknown;
  /** Extra machine-readable facts (the offending field, a path, a pid). */
  details?: Record<string, unknown>;
}

export class KilnError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, opts: KilnErrorOpts = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'KilnError';
    this.code = code;
    this.details = opts.details;
  }

  /** The HTTP status of this error's code. */
  get status(): number {
    return ERROR_CODES[this.code].status;
  }

  toJSON(): { code: ErrorCode; message: string; details?: Record<string, unknown> } {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }
}

export const isKilnError = (e: unknown): e is KilnError => e instanceof KilnError;

/** What to do about a full disk; every `no_space` kiln raises for one says it. */
export const NO_SPACE_ADVICE =
  "free disk space on the filesystem of kiln's state dir (kill sandboxes, delete snapshots and templates you no longer need) and retry";

/** SQLite's primary result code SQLITE_FULL ("database or disk is full"). */
const SQLITE_FULL = 13;

/**
 * True when `e` or an error in its `cause` chain says a disk is full: errno ENOSPC or EDQUOT
 * (fs calls), SQLite's SQLITE_FULL (node:sqlite's `errcode`; extended codes keep the primary
 * code in the low byte). Decided by codes, never by message text.
 */
export function isNoSpace(e: unknown): boolean {
  for (let x: unknown = e, depth = 0; x && typeof x === 'object' && depth < 8; depth++) {
    const o = x as { code?: unknown; errcode?: unknown; cause?: unknown };
    if (o instanceof KilnError && o.code === 'no_space') return true;
    if (o.code === 'ENOSPC' || o.code === 'EDQUOT') return true;
    if (o.code === 'ERR_SQLITE_ERROR' && typeof o.errcode === 'number' && (o.errcode & 0xff) === SQLITE_FULL)
      return true;
    x = o.cause;
  }
  return false;
}

/** Codes that only say "something failed": a full disk behind one is reported as `no_space`. */
const VAGUE: readonly ErrorCode[] = ['internal', 'driver_error', 'image_build_failed'];

/**
 * Wraps anything thrown into a KilnError, keeping KilnErrors as they are, except that a full disk
 * (see {@link isNoSpace}) becomes `no_space` with {@link NO_SPACE_ADVICE}, also when it arrives
 * wrapped in a vague code (`internal`, `driver_error`, `image_build_failed`).
 */
export function asKilnError(e: unknown, code: ErrorCode = 'internal'): KilnError {
  if (e instanceof KilnError && (e.code === 'no_space' || !VAGUE.includes(e.code) || !isNoSpace(e.cause)))
    return e;
  const msg = e instanceof Error ? e.message : String(e);
  if (isNoSpace(e))
    return new KilnError('no_space', `no space left on device (${msg}): ${NO_SPACE_ADVICE}`, { cause: e });
  return new KilnError(code, msg, { cause: e });
}

export const invalidArgument = (field: string, message: string): KilnError =>
  new KilnError('invalid_argument', `${field}: ${message}`, { details: { field } });
