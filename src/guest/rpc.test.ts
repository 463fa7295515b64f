/**
 * Agent RPCs the JS SDK never calls (StreamInput needs a client-streaming transport; the polling
 * watchers are the Python SDK's), and keepalives on idle streams, through connect-node's own
 * client over HTTP/1.1.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createClient, type Client } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { createAgent, type Agent } from './agent.ts';
import { EventType, Filesystem } from '../core/envd/filesystem/filesystem_pb.js';
import { Process, Signal, type StartResponse } from '../core/envd/process/process_pb.js';

type Events = AsyncIterator<StartResponse, unknown>;
/** The next message of a process stream, or undefined at its end (typed, unlike IteratorResult). */
async function next(it: Events): Promise<StartResponse | undefined> {
  const r = await it.next();
  return r.done ? undefined : r.value;
}

let agent: Agent;
let proc: Client<typeof Process>;
let fs: Client<typeof Filesystem>;
let dir: string;
let baseUrl: string;

before(async () => {
  agent = createAgent({ defaultUser: 'root', log: () => undefined, ptyServer: false });
  await new Promise<void>((r) => agent.server.listen(0, '127.0.0.1', r));
  baseUrl = `http://127.0.0.1:${(agent.server.address() as AddressInfo).port}`;
  const transport = createConnectTransport({
    baseUrl,
    httpVersion: '1.1',
    useBinaryFormat: true,
  });
  proc = createClient(Process, transport);
  fs = createClient(Filesystem, transport);
  dir = await mkdtemp(join(tmpdir(), 'kiln-rpc-'));
});
after(async () => {
  await agent.close();
  await rm(dir, { recursive: true, force: true });
});

test('StreamInput feeds stdin of a process selected by tag (binary encoding)', async () => {
  const stream = proc.start({
    process: { cmd: '/bin/sh', args: ['-c', 'head -c 10; echo'] },
    tag: 'feeder',
    stdin: true,
  });
  const it: Events = stream[Symbol.asyncIterator]();
  assert.equal((await next(it))?.event?.event.case, 'start');
  // eslint-disable-next-line @typescript-eslint/require-await -- a client stream is an async iterable
  async function* input() {
    yield {
      event: {
        case: 'start' as const,
        value: { process: { selector: { case: 'tag' as const, value: 'feeder' } } },
      },
    };
    yield {
      event: {
        case: 'data' as const,
        value: {
          input: { input: { case: 'stdin' as const, value: new TextEncoder().encode('0123456789') } },
        },
      },
    };
  }
  await proc.streamInput(input());
  let out = '';
  let exit: number | undefined;
  for (let r = await it.next(); !r.done; r = await it.next()) {
    const ev = r.value.event?.event;
    if (ev?.case === 'data' && ev.value.output.case === 'stdout')
      out += new TextDecoder().decode(ev.value.output.value);
    if (ev?.case === 'end') exit = ev.value.exitCode;
  }
  assert.equal(out, '0123456789\n');
  assert.equal(exit, 0);
});

test('an idle stream gets keepalive events at the requested interval', async () => {
  const events: string[] = [];
  for await (const r of proc.start(
    { process: { cmd: '/bin/sh', args: ['-c', 'sleep 2.5; echo done'] } },
    { headers: { 'keepalive-ping-interval': '1' } },
  )) {
    events.push(r.event?.event.case ?? '?');
  }
  assert.equal(events[0], 'start');
  assert.ok(events.filter((e) => e === 'keepalive').length >= 2, events.join(','));
  assert.deepEqual(events.slice(-2), ['data', 'end']);
});

test('polling watchers: CreateWatcher, GetWatcherEvents, RemoveWatcher', async () => {
  const { watcherId } = await fs.createWatcher({ path: dir, recursive: false });
  await writeFile(join(dir, 'polled.txt'), 'x');
  let names: string[] = [];
  for (let i = 0; i < 50 && names.length === 0; i++) {
    await new Promise((r) => setTimeout(r, 50));
    const { events } = await fs.getWatcherEvents({ watcherId });
    names = events
      .filter((e) => e.type === EventType.CREATE || e.type === EventType.WRITE)
      .map((e) => e.name);
  }
  assert.ok(names.includes('polled.txt'), names.join(','));
  await fs.removeWatcher({ watcherId });
  await assert.rejects(fs.getWatcherEvents({ watcherId }), /not found/);
});

test('SendSignal refuses signals other than TERM and KILL; a bad selector is unimplemented', async () => {
  const { processes } = await proc.list({});
  assert.deepEqual(processes, []);
  await assert.rejects(
    proc.sendSignal({ process: { selector: { case: 'pid', value: 999999 } }, signal: Signal.SIGKILL }),
    /not found/,
  );
  await assert.rejects(proc.sendInput({ process: {} }), /selector must name a pid or a tag/);
  const it: Events = proc.start({ process: { cmd: '/bin/sleep', args: ['30'] } })[Symbol.asyncIterator]();
  const first = (await next(it))?.event?.event;
  const pid = first?.case === 'start' ? first.value.pid : 0;
  assert.ok(pid > 0);
  // SIGINT (2) is not in envd's Signal enum (proto3 enums are open, so a client can send it).
  const r = await fetch(`${baseUrl}/process.Process/SendSignal`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ process: { pid }, signal: 2 }),
  });
  assert.equal(r.status, 501);
  assert.match(((await r.json()) as { message: string }).message, /signal 2 is not supported/);
  await proc.sendSignal({ process: { selector: { case: 'pid', value: pid } }, signal: Signal.SIGTERM });
  let status = '';
  for (let m = await next(it); m; m = await next(it)) {
    const ev = m.event?.event;
    if (ev?.case === 'end') status = ev.value.status;
  }
  assert.equal(status, 'signal: terminated');
});
