import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeyedLock } from './locks.ts';

const tick = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('one key runs one at a time, in order; other keys run alongside', async () => {
  const lock = new KeyedLock();
  const log: string[] = [];
  const job = (k: string, name: string, ms: number) =>
    lock.run(k, async () => {
      log.push(`${name}+`);
      await tick(ms);
      log.push(`${name}-`);
    });
  await Promise.all([job('a', 'a1', 30), job('a', 'a2', 5), job('b', 'b1', 10)]);
  assert.deepEqual(log, ['a1+', 'b1+', 'b1-', 'a1-', 'a2+', 'a2-']);
});

test('a failure releases the key; tryRun refuses while the key is busy', async () => {
  const lock = new KeyedLock();
  await assert.rejects(
    lock.run('k', () => Promise.reject(new Error('boom'))),
    /boom/,
  );
  const slow = lock.run('k', () => tick(30));
  await assert.rejects(
    lock.tryRun('k', 'kill sbx', () => Promise.resolve(1)),
    { code: 'conflict', message: /kill sbx: another operation/ },
  );
  await slow;
  assert.equal(await lock.tryRun('k', 'kill sbx', () => Promise.resolve(2)), 2);
});
