import assert from 'node:assert/strict';
import { test } from 'node:test';
import { nullLogger } from '../../core/log.ts';
import { startLoops, type LoopTasks } from './loops.ts';
import { DEFAULT_RETENTION_S } from './retention.ts';

function tasks(purged: number[]): LoopTasks {
  const idle = (): Promise<void> => Promise.resolve();
  return {
    reap: idle,
    liveness: idle,
    sampleStats: idle,
    flatten: idle,
    purge: (ms) => {
      purged.push(ms);
      return Promise.resolve();
    },
  };
}

test('startLoops purges ended records at once, with the configured retention', () => {
  const purged: number[] = [];
  const timers = startLoops(nullLogger, tasks(purged), { retentionMs: 60_000 });
  for (const t of timers) clearInterval(t);
  assert.deepEqual(purged, [60_000]);
});

test('startLoops: the retention defaults to 7 days', () => {
  const purged: number[] = [];
  const timers = startLoops(nullLogger, tasks(purged), {});
  for (const t of timers) clearInterval(t);
  assert.deepEqual(purged, [DEFAULT_RETENTION_S * 1000]);
  assert.equal(DEFAULT_RETENTION_S, 7 * 24 * 3600);
});

test('startLoops: a failing purge is logged, not thrown', async () => {
  const warned: unknown[] = [];
  const log = { ...nullLogger, warn: (o: unknown) => warned.push(o) } as unknown as typeof nullLogger;
  const t: LoopTasks = { ...tasks([]), purge: () => Promise.reject(new Error('database is locked')) };
  const timers = startLoops(log, t, {});
  for (const x of timers) clearInterval(x);
  await new Promise((r) => setImmediate(r));
  assert.equal(warned.length, 1);
});
