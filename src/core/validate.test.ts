import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KilnError } from './errors.ts';
import { validateMemoryMiB, validateName, validateVcpus } from './validate.ts';

const code = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof KilnError);
    return e.code;
  }
  return 'ok';
};

test('names accept simple file-safe names', () => {
  for (const n of ['default', 'vm-1', 'a', 'py3.11', 'a_b-c.d']) assert.equal(validateName('name', n), n);
});

test('names refuse separators, traversal, empties and oddities', () => {
  for (const n of [
    '',
    '..',
    '../x',
    'a/b',
    'a\\b',
    '.hidden',
    'a..b',
    'UPPER',
    'sp ace',
    'x'.repeat(64),
    'a\0b',
    'trail.',
  ]) {
    assert.equal(
      code(() => validateName('name', n)),
      'invalid_argument',
      JSON.stringify(n),
    );
  }
  assert.equal(
    code(() => validateName('name', 42)),
    'invalid_argument',
  );
});

test('memory and vcpus must be integers in range', () => {
  assert.equal(validateMemoryMiB(256), 256);
  assert.equal(validateVcpus(2), 2);
  for (const v of [-1, 0, 127, 65537, 1.5, NaN, '256', null]) {
    assert.equal(
      code(() => validateMemoryMiB(v)),
      'invalid_argument',
      String(v),
    );
  }
  for (const v of [0, -2, 33, 1.5, '1'])
    assert.equal(
      code(() => validateVcpus(v)),
      'invalid_argument',
      String(v),
    );
  assert.match((() => { try { validateVcpus(0); } catch (e) { return (e as Error).message; } return ''; })(), /vcpus: must be between 1 and 32, got 0/); // prettier-ignore
});
