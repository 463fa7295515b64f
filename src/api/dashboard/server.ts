/**
 * kilnd's web dashboard: one request handler for its own listener (127.0.0.1). Two routers: the
 * sign-in routes, which answer without a session, and everything else (the pages, the front
 * end's files, the JSON API, the live streams), which the guard answers `unauthenticated`
 * without a session and `forbidden` for an action without the session's CSRF token.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { KilnError } from '../../core/errors.ts';
import { createRouter, parseTarget, type Ctx, type Route } from '../http.ts';
import { bindSession, sessionOf, type DashboardDeps } from './deps.ts';
import { authorize, cookieHeader, LOGIN_COOKIE, parseCookies, SESSION_COOKIE } from './guard.ts';
import { LiveHub } from './live.ts';
import { loginPage, SECURITY_HEADERS, sendWebFile } from './pages.ts';
import { guestRoutes } from './routes-guest.ts';
import { objectRoutes } from './routes-objects.ts';
import { sandboxRoutes } from './routes-sandboxes.ts';
import { newSecret } from './session.ts';

const MAX_FORM = 8192;

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  let text = '';
  for await (const c of req) {
    text += String(c);
    if (text.length > MAX_FORM)
      throw new KilnError('invalid_argument', 'body: the sign-in form is too large');
  }
  return new URLSearchParams(text);
}

function sendHtml(
  res: ServerResponse,
  status: number,
  html: string,
  headers: Record<string, string | string[]> = {},
): void {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(html);
}

function redirect(res: ServerResponse, to: string, cookies: string[] = []): void {
  res.writeHead(303, {
    location: to,
    'cache-control': 'no-store',
    ...(cookies.length ? { 'set-cookie': cookies } : {}),
  });
  res.end();
}

const sessionCookie = (value: string): string => cookieHeader(SESSION_COOKIE, value, { maxAgeS: 24 * 3600 });
const clearCookie = (name: string): string => cookieHeader(name, '', { maxAgeS: 0 });

/** GET /login: the form, with a fresh double-submit token in a cookie and a hidden field. */
function showLogin(d: DashboardDeps, c: Ctx, error?: string, status = 200): null {
  if (!error && d.sessions.get(parseCookies(c.req.headers.cookie)[SESSION_COOKIE])) {
    redirect(c.res, '/');
    return null;
  }
  const csrf = newSecret();
  sendHtml(c.res, status, loginPage({ csrf, version: d.version, ...(error ? { error } : {}) }), {
    'set-cookie': cookieHeader(LOGIN_COOKIE, csrf, { maxAgeS: 3600 }),
  });
  return null;
}

/** POST /login: key + form token (equal to the cookie's) -> a session cookie; else the form again. */
async function signIn(d: DashboardDeps, c: Ctx): Promise<null> {
  const form = await readForm(c.req);
  const cookieToken = parseCookies(c.req.headers.cookie)[LOGIN_COOKIE];
  const formToken = form.get('csrf') ?? '';
  if (!cookieToken || cookieToken !== formToken) {
    c.log.info('dashboard sign-in refused: the form token does not match');
    return showLogin(d, c, 'The sign-in form expired; try again.', 403);
  }
  let rec;
  try {
    rec = d.keys.verify(form.get('key')?.trim() || undefined);
  } catch (e) {
    if (e instanceof KilnError && e.code === 'unauthenticated') {
      c.log.info('dashboard sign-in refused: unknown key');
      return showLogin(d, c, 'That API key is not valid.', 401);
    }
    throw e;
  }
  const { cookie, session } = d.sessions.create({ keyId: rec.id, admin: rec.admin }, rec.name);
  c.log.info({ session: session.id, keyId: rec.id }, 'dashboard sign-in');
  redirect(c.res, '/', [sessionCookie(cookie), clearCookie(LOGIN_COOKIE)]);
  return null;
}

/** GET /login/link?token=: a one-time sign-in link (`kiln dashboard --link`). */
function signInLink(d: DashboardDeps, c: Ctx): null {
  const got = d.sessions.redeemLink(c.query.get('token') ?? undefined);
  if (!got) return showLogin(d, c, 'That sign-in link was used already or has expired.', 401);
  c.log.info({ session: got.session.id }, 'dashboard sign-in by link');
  redirect(c.res, '/', [sessionCookie(got.cookie)]);
  return null;
}

function signOut(d: DashboardDeps, c: Ctx): null {
  d.sessions.delete(parseCookies(c.req.headers.cookie)[SESSION_COOKIE]);
  c.log.info({ session: sessionOf(c).id }, 'dashboard sign-out');
  c.res.writeHead(204, { 'set-cookie': clearCookie(SESSION_COOKIE) }).end();
  return null;
}

export interface Dashboard {
  handle(req: IncomingMessage, res: ServerResponse): void;
  /** Ends the live streams and terminals. */
  close(): void;
}

export function createDashboard(d: DashboardDeps, log: Logger): Dashboard {
  const hub = new LiveHub(d, log);
  const open: Route[] = [
    { method: 'GET', path: '/login', handler: (c) => Promise.resolve(showLogin(d, c)) },
    { method: 'POST', path: '/login', handler: (c) => signIn(d, c) },
    { method: 'GET', path: '/login/link', handler: (c) => Promise.resolve(signInLink(d, c)) },
  ];
  const signedIn: Route[] = [
    { method: 'GET', path: '/', handler: (c) => sendWebFile(c.res, d.webDir, 'index.html').then(() => null) },
    {
      method: 'GET',
      path: '/assets/:file',
      handler: (c) => sendWebFile(c.res, d.webDir, `assets/${c.params['file'] ?? ''}`).then(() => null),
    },
    { method: 'POST', path: '/logout', handler: (c) => Promise.resolve(signOut(d, c)) },
    ...objectRoutes(d),
    ...sandboxRoutes(d, hub),
    ...guestRoutes(d),
  ];
  const keyAlive = (id: string): boolean => d.keys.list().some((k) => k.id === id);
  const publicRouter = createRouter(open, log);
  const privateRouter = createRouter(signedIn, log, {
    authenticate: (req) => {
      bindSession(req, authorize(req, d.sessions, keyAlive));
    },
  });
  return {
    handle(req, res) {
      for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
      let path = '';
      try {
        path = parseTarget(req.url).pathname;
      } catch {
        // The router answers the bad target.
      }
      if (path === '/login' || path === '/login/link') {
        publicRouter(req, res);
        return;
      }
      // A page opened without a session goes to the sign-in form; nothing else is served.
      const cookie = parseCookies(req.headers.cookie)[SESSION_COOKIE];
      if (req.method === 'GET' && path === '/' && !d.sessions.get(cookie)) {
        redirect(res, '/login');
        return;
      }
      privateRouter(req, res);
    },
    close() {
      hub.close();
      d.terminals.close();
    },
  };
}
