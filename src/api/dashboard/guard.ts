import type { IncomingMessage } from 'node:http';
import { KilnError } from '../../core/errors.ts';
import { sameSecret, type Session, type SessionStore } from './session.ts';

/** The session cookie: HttpOnly (no script reads it), SameSite=Strict (no other site sends it). */
export const SESSION_COOKIE = 'kiln_session';
/** The sign-in form's double-submit cookie (before a session exists). */
export const LOGIN_COOKIE = 'kiln_login';
/** The header every dashboard action carries: the session's CSRF token. */
export const CSRF_HEADER = 'x-csrf-token';

/** The cookies of a request (the first of each name). */
export function parseCookies(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (header ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i < 0) continue;
    const k = part.slice(0, i).trim();
    const v = part.slice(i + 1).trim();
    if (k && !(k in out)) out[k] = v;
  }
  return out;
}

/** A Set-Cookie value for the dashboard (no Secure: it serves plain HTTP on loopback). */
export function cookieHeader(name: string, value: string, o: { maxAgeS?: number } = {}): string {
  const age = o.maxAgeS === undefined ? '' : `; Max-Age=${o.maxAgeS}`;
  return `${name}=${value}; Path=/; HttpOnly; SameSite=Strict${age}`;
}

/** Methods that change nothing; every other one is an action and needs the CSRF token. */
export const SAFE_METHODS = new Set(['GET', 'HEAD']);

/**
 * Whether the request comes from the dashboard's own pages, as far as the browser says: an
 * `Origin` must be this host's, and `Sec-Fetch-Site` (sent by current browsers) must be
 * `same-origin` (or `none`: typed or bookmarked). A request without either (curl) passes this
 * check and still needs the token.
 */
export function sameOrigin(req: IncomingMessage): boolean {
  const origin = req.headers['origin'];
  if (typeof origin === 'string' && origin !== 'null') {
    if (origin !== `http://${req.headers.host ?? ''}`) return false;
  } else if (origin === 'null') return false;
  const site = req.headers['sec-fetch-site'];
  return site === undefined || site === 'same-origin' || site === 'none';
}

/**
 * The session of a request, or `unauthenticated`; for an action (not GET/HEAD) also the CSRF
 * token and the origin, else `forbidden`. `keyAlive` says whether a key-bound session's API key
 * still exists (a revoked key ends its sessions at once).
 */
export function authorize(
  req: IncomingMessage,
  sessions: SessionStore,
  keyAlive: (keyId: string) => boolean,
): Session {
  const cookie = parseCookies(req.headers.cookie)[SESSION_COOKIE];
  const s = sessions.get(cookie);
  if (!s)
    throw new KilnError('unauthenticated', 'not signed in to the dashboard: sign in with a kiln API key');
  if (s.caller && !keyAlive(s.caller.keyId)) {
    sessions.delete(cookie);
    throw new KilnError('unauthenticated', 'the API key of this session was revoked: sign in again');
  }
  if (!SAFE_METHODS.has(req.method ?? 'GET')) {
    if (!sameOrigin(req))
      throw new KilnError('forbidden', 'a dashboard action must come from the dashboard itself (origin)');
    const token = req.headers[CSRF_HEADER];
    if (!sameSecret(typeof token === 'string' ? token : undefined, s.csrf))
      throw new KilnError('forbidden', `a dashboard action needs the session's CSRF token (${CSRF_HEADER})`);
  }
  return s;
}
