import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createLogger } from '../../core/log.ts';
import { fakeQmp } from './fake-qmp.ts';
import { QmpSessions, RUNNING_RECHECK_MS } from './qmp-sessions.ts';
import { FILES } from './record.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kiln-qmps-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('a running VM is asked once, again after a run-state event, and again after the recheck period', async () => {
  await mkdir(join(dir, 'vm1'));
  let asked = 0;
  let status = { status: 'running', running: true };
  let peer: Socket | undefined;
  const srv = await fakeQmp(join(dir, 'vm1', FILES.qmp), (cmd, sock) => {
    peer = sock;
    if (cmd.execute !== 'query-status') return;
    asked++;
    sock.write(JSON.stringify({ return: status, id: cmd.id }) + '\r\n');
  });
  let now = 1_000_000;
  const s = new QmpSessions(dir, createLogger({ level: 'silent' }), () => now);
  try {
    const alive = (): boolean => true;
    assert.equal((await s.runState('vm1', alive)).state, 'running');
    assert.equal((await s.runState('vm1', alive)).state, 'running');
    assert.equal(asked, 1, 'the second look is answered from what QEMU said');

    // QEMU stops the vCPUs: the event makes the next look ask again, and see it.
    status = { status: 'paused', running: false };
    peer?.write(JSON.stringify({ event: 'STOP', timestamp: { seconds: 1, microseconds: 0 } }) + '\r\n');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal((await s.runState('vm1', alive)).state, 'paused');
    assert.equal((await s.runState('vm1', alive)).state, 'paused');
    assert.equal(asked, 3, 'a paused VM is asked every time');

    status = { status: 'running', running: true };
    peer?.write(JSON.stringify({ event: 'RESUME', timestamp: { seconds: 2, microseconds: 0 } }) + '\r\n');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal((await s.runState('vm1', alive)).state, 'running');
    now += RUNNING_RECHECK_MS + 1;
    assert.equal((await s.runState('vm1', alive)).state, 'running');
    assert.equal(asked, 5, 'asked again once the recheck period is over');

    // A dead process is stopped whatever QEMU said last.
    assert.equal((await s.runState('vm1', () => false)).state, 'stopped');
    assert.equal(asked, 5);
  } finally {
    s.closeAll();
    srv.close();
  }
});
