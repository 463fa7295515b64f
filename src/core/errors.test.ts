import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { ERROR_CODES, KilnError, asKilnError, invalidArgument } from './errors.ts';

test('docs/ERRORS.md lists exactly the catalog codes with the same HTTP status', async () => {
  const md = await readFile(new URL('../../docs/ERRORS.md', import.meta.url), 'utf8');
  const rows = [...md.matchAll(/^\|\s*`([a-z_]+)`\s*\|\s*(\d{3})\s*\|/gm)].map((m) => [m[1], Number(m[2])]);
  const catalog = Object.entries(ERROR_CODES).map(([code, v]) => [code, v.status]);
  assert.deepEqual(rows.sort(), catalog.sort());
});

test('KilnError carries code, status, details and cause', () => {
  const cause = new Error('root');
  const e = new KilnError('not_found', 'VM x does not exist', { cause, details: { id: 'x' } });
  assert.equal(e.code, 'not_found');
  assert.equal(e.status, 404);
  assert.equal(e.cause, cause);
  assert.deepEqual(e.toJSON(), { code: 'not_found', message: 'VM x does not exist', details: { id: 'x' } });
});

test('asKilnError keeps KilnErrors and wraps anything else', () => {
  const k = invalidArgument('memoryMiB', 'too big');
  assert.equal(asKilnError(k), k);
  assert.equal(k.message, 'memoryMiB: too big');
  const w = asKilnError(new Error('boom'), 'driver_error');
  assert.equal(w.code, 'driver_error');
  assert.equal(w.message, 'boom');
  assert.equal(asKilnError('str').code, 'internal');
});

test('a full disk becomes no_space by its code: errno ENOSPC/EDQUOT, SQLITE_FULL, also wrapped in a vague code', () => {
  const enospc = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  const full = Object.assign(new Error('database or disk is full'), {
    code: 'ERR_SQLITE_ERROR',
    errcode: 13,
    errstr: 'database or disk is full',
  });
  for (const e of [
    enospc,
    Object.assign(new Error('quota'), { code: 'EDQUOT' }),
    full,
    new KilnError('driver_error', 'cannot move the overlay', { cause: enospc }),
    new KilnError('internal', 'journal write failed', { cause: full }),
  ]) {
    const k = asKilnError(e);
    assert.equal(k.code, 'no_space', e.message);
    assert.equal(k.status, 507);
    assert.match(k.message, /free disk space .* and retry/, 'says what to do');
  }
  // Other SQLite errors, other errnos and precise codes are left alone; the text alone decides nothing.
  const busy = Object.assign(new Error('database is locked'), { code: 'ERR_SQLITE_ERROR', errcode: 5 });
  assert.equal(asKilnError(busy).code, 'internal');
  assert.equal(asKilnError(Object.assign(new Error('x'), { code: 'EACCES' })).code, 'internal');
  assert.equal(asKilnError(new Error('database or disk is full')).code, 'internal');
  const precise = new KilnError('conflict', 'busy', { cause: enospc });
  assert.equal(asKilnError(precise), precise);
});
