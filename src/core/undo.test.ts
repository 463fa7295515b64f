import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UndoStack } from './undo.ts';

test('unwind runs undo steps newest first and keeps going past failures', async () => {
  const u = new UndoStack();
  const ran: string[] = [];
  u.push('a', () => {
    ran.push('a');
  });
  u.push('b', () => {
    throw new Error('b failed');
  });
  u.push('c', async () => {
    await Promise.resolve();
    ran.push('c');
  });
  const errs = await u.unwind();
  assert.deepEqual(ran, ['c', 'a']);
  assert.deepEqual(
    errs.map((e) => e.message),
    ['b failed'],
  );
  assert.deepEqual(await u.unwind(), [], 'a second unwind has nothing left');
});

test('commit forgets the steps', async () => {
  const u = new UndoStack();
  let ran = false;
  u.push('x', () => {
    ran = true;
  });
  u.commit();
  await u.unwind();
  assert.equal(ran, false);
});
