import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createLogger, fdDestination } from './log.ts';

test('a log on a full disk (/dev/full: ENOSPC) drops lines instead of throwing', () => {
  const fd = openSync('/dev/full', 'w');
  try {
    const dest = fdDestination(fd);
    const log = createLogger({ destination: dest });
    for (let i = 0; i < 50; i++) log.info({ i }, 'line');
    assert.equal(dest.dropped, 50);
  } finally {
    closeSync(fd);
  }
});

test('once the log can be written again, a line says how many were lost and why', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-log-'));
  const path = join(dir, 'kilnd.log');
  const fd = openSync(path, 'a');
  let full = true;
  const write = ((f: number, b: Buffer) => {
    if (full) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    return writeSync(f, b);
  }) as typeof writeSync;
  try {
    const dest = fdDestination(fd, write);
    const log = createLogger({ destination: dest });
    log.info('lost 1');
    log.info('lost 2');
    full = false;
    log.info('kept');
    const lines = readFileSync(path, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { msg: string });
    assert.deepEqual(
      lines.map((l) => l.msg),
      ['2 log lines were lost: the log could not be written (ENOSPC)', 'kept'],
    );
    assert.equal(dest.dropped, 0);
  } finally {
    closeSync(fd);
    await rm(dir, { recursive: true, force: true });
  }
});

test('a write the kernel refuses for now (EAGAIN) is tried again, not dropped', () => {
  const got: string[] = [];
  let refusals = 3;
  const write = ((_f: number, b: Buffer) => {
    if (refusals-- > 0) throw Object.assign(new Error('EAGAIN'), { code: 'EAGAIN' });
    got.push(b.toString());
    return b.length;
  }) as typeof writeSync;
  const dest = fdDestination(99, write);
  createLogger({ destination: dest }).info('once');
  assert.equal(got.length, 1);
  assert.match(got[0] ?? '', /"msg":"once"/);
  assert.equal(dest.dropped, 0);
});
