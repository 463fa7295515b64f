import assert from 'node:assert/strict';
import { test } from 'node:test';
import { offlineContext } from '../../test/helpers/cli.ts';

test('the dispatcher imports without side effects and runs in-process', async (t) => {
  const listeners = process.listenerCount('SIGINT');
  const { dispatch } = await import('./dispatch.ts');
  const { UsageError } = await import('./args.ts');
  assert.equal(process.listenerCount('SIGINT'), listeners, 'importing it wires no signal handler');
  const connects: string[] = [];
  const ctx = offlineContext(connects);
  const log = t.mock.method(console, 'log', () => undefined);
  assert.equal(await dispatch(ctx, ['sandbox', 'create', '--help']), 0);
  assert.match(String(log.mock.calls[0]?.arguments[0]), /^usage: kiln sandbox create/);
  await assert.rejects(dispatch(ctx, ['template', 'frob']), UsageError);
  await assert.rejects(dispatch(ctx, ['frob']), /unknown command "frob"/);
  await assert.rejects(dispatch(ctx, ['sandbox', 'frob']), /unknown command "kiln sandbox frob"/);
  assert.deepEqual(connects, [], 'help and usage errors never reach for a daemon');
});
