import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Caller } from '../../daemon/scope.ts';

/** A signed-in browser. */
export interface Session {
  /** Stable id (not the cookie value): names the session in logs and owns its terminals. */
  id: string;
  /** Whose rights it has: an API key's, or none (a sign-in link from the root-only socket: sees all). */
  caller: Caller | undefined;
  /** The key's name, or `sign-in link`. */
  label: string;
  /** Sent by the page with every action (X-CSRF-Token); never in a cookie. */
  csrf: string;
  createdAt: number;
  lastSeenAt: number;
}

export interface SessionLimits {
  /** A session unused for this long ends. */
  idleMs: number;
  /** A session ends this long after sign-in, used or not. */
  maxAgeMs: number;
  /** A one-time sign-in link is good for this long. */
  linkTtlMs: number;
  /** At most this many sessions at once (the oldest is dropped). */
  maxSessions: number;
}

export const DEFAULT_SESSION_LIMITS: SessionLimits = {
  idleMs: 8 * 3600_000,
  maxAgeMs: 24 * 3600_000,
  linkTtlMs: 120_000,
  maxSessions: 1000,
};

/** A random secret of 32 bytes, base64url. */
export const newSecret = (): string => randomBytes(32).toString('base64url');

const digest = (s: string): string => createHash('sha256').update(s).digest('hex');

/** Constant-time equality of two secrets (false for a missing one). */
export function sameSecret(a: string | undefined, b: string | undefined): boolean {
  if (a === undefined || b === undefined || a === '' || b === '') return false;
  const x = Buffer.from(digest(a));
  const y = Buffer.from(digest(b));
  return timingSafeEqual(x, y);
}

/**
 * The dashboard's sessions and one-time sign-in links, in memory: a kilnd restart signs every
 * browser out (sessions are cheap to make again; nothing secret is ever written to disk). The
 * cookie value is a random secret; only its SHA-256 is a key of the map, so a heap dump or a
 * log of session ids does not hand out sessions.
 */
export class SessionStore {
  readonly #sessions = new Map<string, Session>();
  readonly #links = new Map<string, { caller: Caller | undefined; label: string; expires: number }>();
  readonly #limits: SessionLimits;
  readonly #now: () => number;

  constructor(o: { limits?: Partial<SessionLimits>; now?: () => number } = {}) {
    this.#limits = { ...DEFAULT_SESSION_LIMITS, ...o.limits };
    this.#now = o.now ?? Date.now;
  }

  /** Starts a session; answers the cookie value (the only copy) and the session. */
  create(caller: Caller | undefined, label: string): { cookie: string; session: Session } {
    this.#sweep();
    while (this.#sessions.size >= this.#limits.maxSessions) {
      const oldest = this.#sessions.keys().next().value;
      if (oldest === undefined) break;
      this.#sessions.delete(oldest);
    }
    const cookie = newSecret();
    const now = this.#now();
    const session: Session = {
      id: newSecret().slice(0, 16),
      caller,
      label,
      csrf: newSecret(),
      createdAt: now,
      lastSeenAt: now,
    };
    this.#sessions.set(digest(cookie), session);
    return { cookie, session };
  }

  /** The live session of a cookie value (its last use is now), or undefined. */
  get(cookie: string | undefined): Session | undefined {
    if (!cookie) return undefined;
    const key = digest(cookie);
    const s = this.#sessions.get(key);
    if (!s) return undefined;
    const now = this.#now();
    if (now - s.lastSeenAt > this.#limits.idleMs || now - s.createdAt > this.#limits.maxAgeMs) {
      this.#sessions.delete(key);
      return undefined;
    }
    s.lastSeenAt = now;
    return s;
  }

  /** Ends the session of a cookie value (sign out); true if there was one. */
  delete(cookie: string | undefined): boolean {
    return cookie ? this.#sessions.delete(digest(cookie)) : false;
  }

  /** Ends every session of an API key (it was revoked). */
  dropKey(keyId: string): number {
    let n = 0;
    for (const [k, s] of this.#sessions)
      if (s.caller?.keyId === keyId) {
        this.#sessions.delete(k);
        n++;
      }
    return n;
  }

  /** A one-time sign-in token, good for `linkTtlMs`. */
  mintLink(caller: Caller | undefined, label: string): { token: string; expiresAt: number } {
    this.#sweep();
    const token = newSecret();
    const expiresAt = this.#now() + this.#limits.linkTtlMs;
    this.#links.set(digest(token), { caller, label, expires: expiresAt });
    return { token, expiresAt };
  }

  /** Spends a sign-in token: a new session, or undefined (unknown, used or expired). */
  redeemLink(token: string | undefined): { cookie: string; session: Session } | undefined {
    if (!token) return undefined;
    const key = digest(token);
    const l = this.#links.get(key);
    this.#links.delete(key);
    if (!l || l.expires < this.#now()) return undefined;
    return this.create(l.caller, l.label);
  }

  get size(): number {
    return this.#sessions.size;
  }

  #sweep(): void {
    const now = this.#now();
    for (const [k, s] of this.#sessions)
      if (now - s.lastSeenAt > this.#limits.idleMs || now - s.createdAt > this.#limits.maxAgeMs)
        this.#sessions.delete(k);
    for (const [k, l] of this.#links) if (l.expires < now) this.#links.delete(k);
  }
}
