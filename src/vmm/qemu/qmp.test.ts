import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { fakeQmp } from './fake-qmp.ts';
import { QmpClient } from './qmp.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kiln-qmp-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('executes commands, matches replies by id (out of order), emits events', async () => {
  const path = join(dir, 'a.sock');
  const held: { id?: string }[] = [];
  const srv = await fakeQmp(path, (cmd, sock) => {
    if (cmd.execute === 'slow') held.push(cmd);
    else if (cmd.execute === 'query-status') {
      sock.write(JSON.stringify({ event: 'STOP', timestamp: { seconds: 1, microseconds: 2 } }) + '\r\n');
      sock.write(JSON.stringify({ return: { status: 'paused', running: false }, id: cmd.id }) + '\r\n');
      for (const h of held) sock.write(JSON.stringify({ return: 'slow-done', id: h.id }) + '\r\n');
    }
  });
  const q = await QmpClient.connect(path);
  const events: string[] = [];
  q.on('event', (e) => events.push(e.event));
  const slow = q.execute('slow');
  const st = await q.execute<{ status: string }>('query-status');
  assert.equal(st.status, 'paused');
  assert.equal(await slow, 'slow-done');
  assert.deepEqual(events, ['STOP']);
  q.close();
  srv.close();
});

test('a QMP error becomes driver_error with the class and description', async () => {
  const path = join(dir, 'b.sock');
  const srv = await fakeQmp(path, (cmd, sock) => {
    sock.write(
      JSON.stringify({
        error: { class: 'CommandNotFound', desc: 'The command nope has not been found' },
        id: cmd.id,
      }) + '\n',
    );
  });
  const q = await QmpClient.connect(path);
  await assert.rejects(q.execute('nope'), (e: Error & { code?: string }) => {
    assert.equal(e.code, 'driver_error');
    assert.match(e.message, /QMP nope: The command nope has not been found \(CommandNotFound\)/);
    return true;
  });
  q.close();
  srv.close();
});

test('timeouts, waitEvent, and a closed socket rejecting pending commands', async () => {
  const path = join(dir, 'c.sock');
  let peer: Socket | undefined;
  const srv = await fakeQmp(path, (cmd, sock) => {
    peer = sock;
    if (cmd.execute === 'emit')
      sock.write(
        JSON.stringify({ event: 'RESUME' }) + '\n' + JSON.stringify({ return: {}, id: cmd.id }) + '\n',
      );
  });
  const q = await QmpClient.connect(path);
  await assert.rejects(q.execute('ignored', undefined, { timeoutMs: 50 }), { code: 'timeout' });
  const ev = q.waitEvent('RESUME', { timeoutMs: 2000 });
  await q.execute('emit');
  assert.equal((await ev).event, 'RESUME');
  await assert.rejects(q.waitEvent('NEVER', { timeoutMs: 30 }), { code: 'timeout' });
  const pending = q.execute('hang');
  peer?.destroy();
  await assert.rejects(pending, { code: 'driver_error', message: /connection closed/ });
  assert.equal(q.closed, true);
  await assert.rejects(q.execute('after'), { code: 'driver_error' });
  srv.close();
});

test('connect fails clearly when nothing listens or no greeting comes', async () => {
  await assert.rejects(QmpClient.connect(join(dir, 'none.sock'), { timeoutMs: 500 }), {
    code: 'driver_error',
  });
  const path = join(dir, 'mute.sock');
  const srv = createServer(() => undefined);
  await new Promise<void>((r) => srv.listen(path, r));
  await assert.rejects(QmpClient.connect(path, { timeoutMs: 100 }), {
    code: 'timeout',
    message: /no greeting/,
  });
  srv.close();
});
