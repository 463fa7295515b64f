import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { describe, it } from 'node:test';
import { isKilnError } from '../../core/errors.ts';
import { authorize, cookieHeader, CSRF_HEADER, parseCookies, sameOrigin, SESSION_COOKIE } from './guard.ts';
import { sameSecret, SessionStore } from './session.ts';

const clock = (): { now: () => number; t: number } => {
  const c = { t: 1_000_000, now: () => c.t };
  return c;
};

const req = (method: string, headers: Record<string, string>): IncomingMessage =>
  ({ method, headers: { host: '127.0.0.1:7482', ...headers } }) as unknown as IncomingMessage;

const codeOf = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    return isKilnError(e) ? e.code : 'not a KilnError';
  }
  return 'no error';
};

describe('dashboard sessions', () => {
  it('a session is found by its cookie value only, and ends on sign-out', () => {
    const s = new SessionStore();
    const { cookie, session } = s.create({ keyId: 'key-1', admin: false }, 'k');
    assert.equal(s.get(cookie), session);
    assert.equal(s.get(cookie + 'x'), undefined);
    assert.equal(s.get(session.id), undefined, 'the session id is not a credential');
    assert.equal(s.get(undefined), undefined);
    assert.equal(s.delete(cookie), true);
    assert.equal(s.get(cookie), undefined);
    assert.notEqual(session.csrf, cookie);
  });

  it('ends after the idle time and after the maximum age, used or not', () => {
    const c = clock();
    const s = new SessionStore({ now: c.now, limits: { idleMs: 1000, maxAgeMs: 5000 } });
    const a = s.create(undefined, 'a');
    c.t += 999;
    assert.ok(s.get(a.cookie));
    c.t += 1001;
    assert.equal(s.get(a.cookie), undefined, 'idle too long');
    const b = s.create(undefined, 'b');
    for (let i = 0; i < 5; i++) {
      c.t += 900;
      assert.ok(s.get(b.cookie));
    }
    c.t += 900;
    assert.equal(s.get(b.cookie), undefined, 'older than the maximum age');
  });

  it('keeps at most maxSessions, dropping the oldest', () => {
    const s = new SessionStore({ limits: { maxSessions: 2 } });
    const a = s.create(undefined, 'a');
    const b = s.create(undefined, 'b');
    const c = s.create(undefined, 'c');
    assert.equal(s.get(a.cookie), undefined);
    assert.ok(s.get(b.cookie) && s.get(c.cookie));
    assert.equal(s.size, 2);
  });

  it('a revoked key ends its sessions', () => {
    const s = new SessionStore();
    const a = s.create({ keyId: 'key-1', admin: false }, 'a');
    const b = s.create({ keyId: 'key-2', admin: false }, 'b');
    assert.equal(s.dropKey('key-1'), 1);
    assert.equal(s.get(a.cookie), undefined);
    assert.ok(s.get(b.cookie));
  });

  it('a sign-in link works once and only before it expires', () => {
    const c = clock();
    const s = new SessionStore({ now: c.now, limits: { linkTtlMs: 1000 } });
    const l = s.mintLink(undefined, 'sign-in link');
    const got = s.redeemLink(l.token);
    assert.ok(got);
    assert.equal(got.session.caller, undefined);
    assert.equal(s.redeemLink(l.token), undefined, 'used already');
    const l2 = s.mintLink(undefined, 'x');
    c.t += 1001;
    assert.equal(s.redeemLink(l2.token), undefined, 'expired');
    assert.equal(s.redeemLink('made-up'), undefined);
    assert.equal(s.redeemLink(undefined), undefined);
  });

  it('secrets compare in constant time and never equal a missing one', () => {
    assert.equal(sameSecret('abc', 'abc'), true);
    assert.equal(sameSecret('abc', 'abd'), false);
    assert.equal(sameSecret('', ''), false);
    assert.equal(sameSecret(undefined, undefined), false);
    assert.equal(sameSecret('abc', undefined), false);
  });
});

describe('dashboard request guard', () => {
  const setup = (): { s: SessionStore; cookie: string; csrf: string } => {
    const s = new SessionStore();
    const { cookie, session } = s.create({ keyId: 'key-1', admin: true }, 'k');
    return { s, cookie, csrf: session.csrf };
  };
  const alive = (): boolean => true;

  it('parses cookies and writes HttpOnly SameSite=Strict ones', () => {
    assert.deepEqual(parseCookies('a=1; kiln_session=xyz; a=2'), { a: '1', kiln_session: 'xyz' });
    assert.deepEqual(parseCookies(undefined), {});
    assert.equal(
      cookieHeader(SESSION_COOKIE, 'v', { maxAgeS: 10 }),
      'kiln_session=v; Path=/; HttpOnly; SameSite=Strict; Max-Age=10',
    );
  });

  it('refuses a request without a session (unauthenticated), reads go through with one', () => {
    const { s, cookie } = setup();
    assert.equal(
      codeOf(() => authorize(req('GET', {}), s, alive)),
      'unauthenticated',
    );
    assert.equal(
      codeOf(() => authorize(req('GET', { cookie: `${SESSION_COOKIE}=wrong` }), s, alive)),
      'unauthenticated',
    );
    assert.equal(authorize(req('GET', { cookie: `${SESSION_COOKIE}=${cookie}` }), s, alive).label, 'k');
  });

  it('an action needs the CSRF token (forbidden without it or with a wrong one)', () => {
    const { s, cookie, csrf } = setup();
    const c = { cookie: `${SESSION_COOKIE}=${cookie}` };
    for (const m of ['POST', 'DELETE', 'PUT', 'PATCH'])
      assert.equal(
        codeOf(() => authorize(req(m, c), s, alive)),
        'forbidden',
        m,
      );
    assert.equal(
      codeOf(() => authorize(req('POST', { ...c, [CSRF_HEADER]: 'nope' }), s, alive)),
      'forbidden',
    );
    assert.equal(
      codeOf(() => authorize(req('POST', { ...c, [CSRF_HEADER]: cookie }), s, alive)),
      'forbidden',
    );
    assert.ok(authorize(req('POST', { ...c, [CSRF_HEADER]: csrf }), s, alive));
  });

  it('an action from another origin is refused even with the token', () => {
    const { s, cookie, csrf } = setup();
    const h = { cookie: `${SESSION_COOKIE}=${cookie}`, [CSRF_HEADER]: csrf };
    assert.equal(
      codeOf(() => authorize(req('POST', { ...h, origin: 'http://evil.example' }), s, alive)),
      'forbidden',
    );
    assert.equal(
      codeOf(() => authorize(req('POST', { ...h, origin: 'null' }), s, alive)),
      'forbidden',
    );
    assert.equal(
      codeOf(() => authorize(req('POST', { ...h, 'sec-fetch-site': 'cross-site' }), s, alive)),
      'forbidden',
    );
    assert.ok(authorize(req('POST', { ...h, origin: 'http://127.0.0.1:7482' }), s, alive));
    assert.equal(sameOrigin(req('POST', { 'sec-fetch-site': 'same-origin' })), true);
  });

  it('a session whose key was revoked is refused and ended', () => {
    const { s, cookie } = setup();
    const c = { cookie: `${SESSION_COOKIE}=${cookie}` };
    assert.equal(
      codeOf(() => authorize(req('GET', c), s, () => false)),
      'unauthenticated',
    );
    assert.equal(s.get(cookie), undefined);
  });
});
