import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { captureLog } from '../../test/helpers/log-capture.ts';
import { processGuard } from './process-guard.ts';

describe('process guard', () => {
  it('logs uncaught exceptions and unhandled rejections as errors and keeps going', () => {
    const cap = captureLog();
    let storms = 0;
    const g = processGuard({ log: cap.log, onStorm: () => storms++ });
    g.uncaughtException(new Error('a timer threw'));
    g.unhandledRejection(new Error('a dropped promise'));
    assert.equal(storms, 0);
    assert.deepEqual(
      cap.lines.map((l) => [l['level'], l['msg'], (l['err'] as { message: string }).message]),
      [
        [50, 'uncaught exception; kilnd keeps serving', 'a timer threw'],
        [50, 'unhandled promise rejection; kilnd keeps serving', 'a dropped promise'],
      ],
    );
  });

  it('a storm (more than maxPerMinute within a minute) stops kilnd once; spread-out failures do not', () => {
    const cap = captureLog();
    let t = 0;
    let storms = 0;
    const g = processGuard({ log: cap.log, onStorm: () => storms++, maxPerMinute: 3, now: () => t });
    for (let i = 0; i < 10; i++) {
      g.uncaughtException(new Error(`slow ${i}`));
      t += 30_000;
    }
    assert.equal(storms, 0, 'two a minute is not a storm');
    for (let i = 0; i < 4; i++) g.unhandledRejection(new Error(`fast ${i}`));
    assert.equal(storms, 1);
    for (let i = 0; i < 4; i++) g.uncaughtException(new Error(`more ${i}`));
    assert.equal(storms, 1, 'stopping is asked for once');
    assert.equal(cap.lines.filter((l) => l['level'] === 60).length, 1);
  });

  it('a failing log does not make the guard throw', () => {
    const cap = captureLog();
    const broken = Object.create(cap.log) as typeof cap.log;
    broken.error = () => {
      throw new Error('EIO: the log is gone');
    };
    broken.fatal = broken.error;
    let storms = 0;
    const g = processGuard({ log: broken, onStorm: () => storms++, maxPerMinute: 0 });
    g.uncaughtException(new Error('x'));
    assert.equal(storms, 1);
  });
});
