import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KilnError } from './errors.ts';
import { run } from './exec.ts';
import { pidAlive, sleep } from './proc.ts';

test('run returns output and streams lines', async () => {
  const lines: string[] = [];
  const r = await run('sh', ['-c', 'echo one; echo two >&2'], { onLine: (l) => lines.push(l) });
  assert.equal(r.stdout, 'one\n');
  assert.deepEqual(lines.sort(), ['one', 'two']);
});

test('a missing program is missing_tool naming it', async () => {
  await assert.rejects(run('kiln-no-such-tool', []), (e: unknown) => {
    assert.ok(e instanceof KilnError);
    assert.equal(e.code, 'missing_tool');
    assert.match(e.message, /kiln-no-such-tool is not installed/);
    return true;
  });
});

test('a failure carries the exit code and stderr tail; ENOSPC text maps to no_space', async () => {
  await assert.rejects(
    run('sh', ['-c', 'echo bad thing >&2; exit 3'], { failCode: 'image_build_failed' }),
    (e: unknown) => {
      assert.ok(e instanceof KilnError);
      assert.equal(e.code, 'image_build_failed');
      assert.match(e.message, /exit code 3.*bad thing/);
      return true;
    },
  );
  await assert.rejects(run('sh', ['-c', 'echo "write: No space left on device" >&2; exit 1']), {
    code: 'no_space',
  });
});

test('abort kills the whole process group, grandchildren included', async () => {
  const ac = new AbortController();
  let grandchild = 0;
  const p = run('sh', ['-c', 'sleep 30 & echo $!; wait'], {
    signal: ac.signal,
    onLine: (l) => {
      grandchild = Number(l);
    },
  });
  while (grandchild === 0) await sleep(10);
  ac.abort();
  await assert.rejects(p, { code: 'cancelled' });
  for (let i = 0; i < 100 && pidAlive(grandchild); i++) await sleep(20);
  assert.equal(pidAlive(grandchild), false, 'the backgrounded sleep was killed too');
});
