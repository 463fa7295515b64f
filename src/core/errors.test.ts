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
