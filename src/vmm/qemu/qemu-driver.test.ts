/**
 * The QEMU driver's bookkeeping without booting a VM: a stand-in "QEMU" process (node, with a
 * kiln VM's command line) and a stand-in QMP server, and host reads that fail on demand. Real
 * guests: test/integration/qemu-driver.test.ts.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { pidAlive, procStat, waitPidExit } from '../../core/proc.ts';
import { rejectsWith } from '../driver.contract.ts';
import { faultyIo } from './host-io.ts';
import { QemuDriver } from './qemu-driver.ts';

interface StandIn {
  pid: number;
  dir: string;
  child: ChildProcess;
  qmp: Server | undefined;
}

/** What the stand-in QMP server answers (per command) and which events it sends on connect. */
interface QmpScript {
  answers?: Record<string, unknown>;
  events?: Record<string, unknown>[];
}

describe('QemuDriver bookkeeping (stand-in processes)', () => {
  let root: string;
  let runDir: string;
  const standIns: StandIn[] = [];
  const drivers: QemuDriver[] = [];
  const sockets = new Set<Socket>();
  const driver = (o: { io?: ReturnType<typeof faultyIo>['io'] } = {}): QemuDriver => {
    const d = new QemuDriver({ runDir, qemuBinary: process.execPath, ...o });
    drivers.push(d);
    return d;
  };

  beforeEach(async () => {
    root = await mkdtemp('/tmp/kiln-qd-');
    runDir = join(root, 'vms');
    await mkdir(runDir);
  });
  afterEach(async () => {
    for (const d of drivers.splice(0)) await d.close();
    for (const s of sockets) s.destroy();
    for (const s of standIns.splice(0)) {
      s.child.kill('SIGKILL');
      s.qmp?.close();
      await waitPidExit(s.pid, 5000);
    }
    await rm(root, { recursive: true, force: true });
  });

  /** A process whose command line is that of VM `id` of `dir`'s run dir, with a record and QMP socket. */
  async function standIn(id: string, o: { runDir?: string; qmp?: QmpScript } = {}): Promise<StandIn> {
    const dir = join(o.runDir ?? runDir, id);
    await mkdir(dir, { recursive: true });
    const child = spawn(
      process.execPath,
      ['-e', 'setInterval(() => {}, 1e6)', '--', '-name', `kiln-${id}`, '-pidfile', join(dir, 'qemu.pid')],
      { stdio: 'ignore' },
    );
    const pid = child.pid ?? 0;
    let qmp: Server | undefined;
    if (o.qmp) {
      const script = o.qmp;
      qmp = createServer((sock: Socket) => {
        sockets.add(sock);
        sock.on('close', () => sockets.delete(sock));
        sock.write(JSON.stringify({ QMP: { version: {}, capabilities: [] } }) + '\n');
        let events = script.events ?? [];
        let buf = '';
        sock.on('data', (d) => {
          buf += d.toString();
          for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
            const msg = JSON.parse(buf.slice(0, nl)) as { execute: string; id: string };
            buf = buf.slice(nl + 1);
            if (msg.execute === 'qmp_capabilities') {
              sock.write(JSON.stringify({ return: {}, id: msg.id }) + '\n');
              continue;
            }
            // Events come between commands, as QEMU sends them when they happen.
            for (const ev of events) sock.write(JSON.stringify(ev) + '\n');
            events = [];
            sock.write(JSON.stringify({ return: script.answers?.[msg.execute] ?? {}, id: msg.id }) + '\n');
          }
        });
      });
      const server = qmp;
      await new Promise<void>((r) => server.listen(join(dir, 'qmp.sock'), r));
    }
    // The stand-in must be up before its start time is recorded.
    for (let i = 0; i < 100 && !procStat(pid); i++) await new Promise((r) => setTimeout(r, 10));
    await writeFile(
      join(dir, 'vm.json'),
      JSON.stringify({
        id,
        pid,
        pidStartTime: procStat(pid)?.startTime ?? 0,
        accel: 'tcg',
        ports: { 49983: 40000 },
        startedAt: new Date().toISOString(),
        spec: { id, kernel: '/k', initrd: '/i', rootfs: '/r', memoryMiB: 256, vcpus: 1 },
      }),
    );
    const s = { pid, dir, child, qmp };
    standIns.push(s);
    return s;
  }

  const running = { answers: { 'query-status': { status: 'running', running: true } } };

  it('an EMFILE reading the record or /proc is a driver_error: not gone, not stopped, nothing removed', async () => {
    const faults = faultyIo();
    const d = driver({ io: faults.io });
    const vm = await standIn('a', { qmp: running });
    assert.equal((await d.status('a')).state, 'running');
    for (const only of [(p: string) => p.endsWith('/vm.json'), (p: string) => p === `/proc/${vm.pid}/stat`]) {
      faults.fail('EMFILE', only);
      await rejectsWith(d.status('a'), 'driver_error', /EMFILE.*unknown, not gone/);
      await rejectsWith(d.kill('a'), 'driver_error', /EMFILE/);
      await rejectsWith(d.stop('a'), 'driver_error', /EMFILE/);
      faults.fail(undefined);
      assert.ok(pidAlive(vm.pid), 'the VM process was not killed');
      assert.ok(existsSync(join(vm.dir, 'vm.json')), 'its directory was not removed');
    }
    // Listing the run dir or /proc fails loudly too, instead of missing VMs.
    faults.fail('EMFILE', (p) => p === runDir || p === '/proc');
    await rejectsWith(d.list(), 'driver_error', /EMFILE/);
    faults.fail(undefined);
    assert.equal((await d.status('a')).state, 'running');
    await d.kill('a');
    assert.equal(pidAlive(vm.pid), false);
    assert.equal(existsSync(vm.dir), false);
  });

  it('a dead process, or a recycled pid, is a positive observation: stopped', async () => {
    const d = driver();
    const vm = await standIn('b', { qmp: running });
    vm.child.kill('SIGKILL');
    await waitPidExit(vm.pid, 5000);
    assert.equal((await d.status('b')).state, 'stopped');
    // A live pid with another start time is another process.
    const other = await standIn('c', { qmp: running });
    const rec = JSON.parse(await readFile(join(other.dir, 'vm.json'), 'utf8')) as Record<string, unknown>;
    await writeFile(join(other.dir, 'vm.json'), JSON.stringify({ ...rec, pidStartTime: 1 }));
    assert.equal((await d.status('c')).state, 'stopped');
  });

  it('finds a VM process of its own run dir by command line when the directory is gone, and kills it', async () => {
    const d = driver();
    const mine = await standIn('lost');
    const otherRunDir = join(root, 'other-vms');
    const theirs = await standIn('lost2', { runDir: otherRunDir });
    const theirsSameId = await standIn('lost', { runDir: otherRunDir });
    await rm(mine.dir, { recursive: true });
    assert.deepEqual(await d.list(), ['lost'], "another run dir's VMs are not this driver's");
    await rejectsWith(d.status('lost'), 'not_found', new RegExp(`process ${mine.pid} still runs`));
    await d.kill('lost');
    assert.equal(pidAlive(mine.pid), false);
    assert.ok(pidAlive(theirs.pid) && pidAlive(theirsSameId.pid), "another run dir's VMs live on");
    assert.deepEqual(await d.list(), []);
    await rejectsWith(d.kill('lost'), 'not_found');
    await rejectsWith(d.status('lost'), 'not_found', /does not exist/);
  });

  it('reports a VM QEMU stopped on a full disk (BLOCK_IO_ERROR, io-error) as paused with a nospace fault', async () => {
    const d = driver();
    await standIn('full', {
      qmp: {
        answers: {
          'query-status': { status: 'io-error', running: false },
          'query-block': [{ device: 'root' }],
        },
        events: [
          {
            event: 'BLOCK_IO_ERROR',
            data: {
              device: 'root',
              operation: 'write',
              action: 'stop',
              nospace: true,
              reason: 'No space left on device',
            },
            timestamp: { seconds: 1, microseconds: 0 },
          },
          { event: 'STOP', timestamp: { seconds: 1, microseconds: 0 } },
        ],
      },
    });
    const info = await d.status('full');
    assert.equal(info.state, 'paused');
    assert.deepEqual(info.fault, {
      kind: 'io_error',
      nospace: true,
      message: 'QEMU stopped the VM: a write to its disk failed (No space left on device)',
    });
    // Without the event (a re-attached driver missed it), query-block's io-status tells.
    await standIn('full2', {
      qmp: {
        answers: {
          'query-status': { status: 'io-error', running: false },
          'query-block': [{ device: 'root', 'io-status': 'nospace' }],
        },
      },
    });
    assert.equal((await d.status('full2')).fault?.nospace, true);
  });

  it('consoleTail: the last lines of the serial log, control characters dropped', async () => {
    const d = driver();
    const vm = await standIn('con');
    const lines = Array.from({ length: 5000 }, (_, i) => `[ ${i}.000] line ${i}`);
    lines.push('\x1b[0mKernel panic - not syncing: Attempted to kill init! exitcode=0x00000009\r');
    await writeFile(join(vm.dir, 'serial.log'), lines.join('\n') + '\n');
    const tail = await d.consoleTail('con', 3);
    assert.deepEqual(tail, [
      '[ 4998.000] line 4998',
      '[ 4999.000] line 4999',
      'Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009',
    ]);
    await rejectsWith(d.consoleTail('nope'), 'not_found');
  });
});
