import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SqliteStore } from '../../store/sqlite-store.ts';
import { sandbox, template } from '../../store/store.contract.ts';
import type { Store } from '../../store/store.ts';
import { DEFAULT_RETENTION_S, purgeEndedRecords } from './retention.ts';

const DAY = 24 * 3600 * 1000;

test('purgeEndedRecords asks the store for what ended one retention period before the clock', () => {
  const asked: string[] = [];
  const store = {
    purgeEnded: (endedBefore: string) => {
      asked.push(endedBefore);
      return { sandboxes: ['sbx-x'], events: 3, operations: 1 };
    },
  } as unknown as Store;
  const now = Date.parse('2026-03-10T12:00:00.000Z');
  assert.deepEqual(
    purgeEndedRecords(store, () => now, DEFAULT_RETENTION_S * 1000),
    {
      sandboxes: ['sbx-x'],
      events: 3,
      operations: 1,
    },
  );
  assert.deepEqual(asked, ['2026-03-03T12:00:00.000Z'], 'seven days by default');
  assert.throws(() => purgeEndedRecords(store, () => now, -1), { code: 'invalid_argument' });
  assert.equal(asked.length, 1, 'a bad period asks nothing');
});

test('purgeEndedRecords: a dead sandbox stays until its retention has passed on the clock, then goes with its events', () => {
  const store = new SqliteStore(':memory:');
  store.putTemplate(template());
  store.insertSandbox(sandbox({ id: 'gone', state: 'running' }));
  store.insertSandbox(sandbox({ id: 'alive', state: 'running' }));
  store.appendEvent('gone', 'info', 'started');
  const diedAt = Date.now();
  store.updateSandbox('gone', { state: 'dead', endReason: 'killed' });
  let clock = diedAt;
  const now = (): number => clock;
  assert.deepEqual(purgeEndedRecords(store, now, DAY).sandboxes, []);
  clock = diedAt + DAY - 60_000; // a minute short of a day
  assert.deepEqual(purgeEndedRecords(store, now, DAY).sandboxes, []);
  assert.equal(store.getSandbox('gone').state, 'dead');
  clock = diedAt + DAY + 60_000;
  assert.deepEqual(purgeEndedRecords(store, now, DAY), { sandboxes: ['gone'], events: 1, operations: 0 });
  assert.throws(() => store.getSandbox('gone'), { code: 'not_found' });
  assert.equal(store.getSandbox('alive').state, 'running', 'a live sandbox is never purged');
  store.close();
});
