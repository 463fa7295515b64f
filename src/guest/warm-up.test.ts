/**
 * The agent's warm-up (warm-up.ts): one command through the agent's own handler before `ready`,
 * and an /init over a throwaway state that leaves the agent's own untouched, over a root-only
 * socket that is gone afterwards; a warm-up that fails or hangs is logged and never keeps the
 * agent from starting.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createAgent } from './agent.ts';
import { create, toBinary } from '@bufbuild/protobuf';
import { StartResponseSchema } from '../core/envd/process/process_pb.js';
import { streamEnded, warmUp } from './warm-up.ts';
import { tokenSha256 } from '../core/envd-auth.ts';

describe('the agent warm-up', { timeout: 60_000 }, () => {
  let base: string;
  before(async () => {
    base = await mkdtemp(join(tmpdir(), 'kiln-warm-'));
  });
  after(async () => {
    await rm(base, { recursive: true, force: true });
  });

  it('runs a command through the handler before ready, then leaves no socket behind', async () => {
    const run = join(base, 'ok');
    const logs: string[] = [];
    const bootstrap = tokenSha256('the bootstrap token');
    const agent = createAgent({
      defaultUser: 'root',
      warmUp: true,
      ptyDir: run,
      bootstrapTokenSha256: bootstrap,
      log: (l) => logs.push(l),
    });
    try {
      await agent.ready;
      assert.match(
        logs.join('\n'),
        /warm-up: \/bin\/true ran through the handler \(JSON, protobuf\), \/init over a throwaway state, in \d+ ms/,
      );
      // The /init of the warm-up (answered 204, else the line above says it failed) set up a
      // throwaway state: the agent's is as it started, still waiting for the bootstrap token.
      assert.deepEqual(
        {
          token: agent.state.accessToken,
          bootstrap: agent.state.bootstrapTokenSha256,
          env: agent.state.envVars,
          lastInit: agent.state.lastInitMs,
        },
        { token: undefined, bootstrap, env: {}, lastInit: 0 },
      );
      assert.deepEqual(
        readdirSync(run).filter((f) => f.startsWith('warm-')),
        [],
        'the warm-up socket directory is removed',
      );
      assert.deepEqual(agent.processes.list(), [], 'nothing of it still runs');
    } finally {
      await agent.close();
    }
  });

  it('a warm-up that fails is logged, and the agent still starts', async () => {
    const logs: string[] = [];
    const agent = createAgent({
      defaultUser: 'no-such-user-kiln',
      warmUp: true,
      ptyDir: join(base, 'fails'),
      log: (l) => logs.push(l),
    });
    try {
      await agent.ready;
      assert.match(logs.join('\n'), /warm-up failed: .*invalid username: 'no-such-user-kiln'/);
    } finally {
      await agent.close();
    }
  });

  it('reads a Start stream in either form: the end event and a clean close, or what is missing', () => {
    const env = (flags: number, data: Uint8Array): Buffer => {
      const head = Buffer.alloc(5);
      head.writeUInt8(flags, 0);
      head.writeUInt32BE(data.length, 1);
      return Buffer.concat([head, data]);
    };
    const json = (flags: number, v: unknown): Buffer => env(flags, Buffer.from(JSON.stringify(v)));
    const proto = (c: 'start' | 'end'): Buffer =>
      env(
        0,
        toBinary(
          StartResponseSchema,
          create(StartResponseSchema, {
            event: {
              event:
                c === 'start'
                  ? { case: 'start', value: { pid: 7 } }
                  : { case: 'end', value: { exitCode: 0, exited: true, status: 'exit status 0' } },
            },
          }),
        ),
      );
    const start = json(0, { event: { start: { pid: 7 } } });
    const end = json(0, { event: { end: { exited: true, status: 'exit status 0' } } });
    assert.equal(streamEnded(Buffer.concat([start, end, json(2, {})]), 'json'), true);
    assert.equal(streamEnded(Buffer.concat([proto('start'), proto('end'), json(2, {})]), 'proto'), true);
    assert.equal(
      streamEnded(Buffer.concat([start, json(2, {})]), 'json'),
      'the stream ended without the command ending',
    );
    assert.equal(
      streamEnded(
        Buffer.concat([start, json(2, { error: { code: 'unauthenticated', message: 'no' } })]),
        'json',
      ),
      'the stream ended with an error: no',
    );
    assert.equal(streamEnded(Buffer.concat([start, end]), 'json'), 'the stream was not closed');
    assert.equal(streamEnded(Buffer.concat([start, end]).subarray(0, 20), 'json'), 'a truncated stream');
    assert.equal(streamEnded(Buffer.from('broken'), 'json'), 'a truncated stream');
    assert.match(String(streamEnded(env(2, Buffer.from('not json')), 'json')), /^a malformed stream \(/);
  });

  it('an error answer and a handler that never answers reject with what happened; no socket is left', async () => {
    const dir = join(base, 'direct');
    await assert.rejects(
      warmUp({
        dir,
        user: 'root',
        rpc: (_req, res) => {
          res.writeHead(500).end('broken');
        },
      }),
      /the warm-up command \(json\) answered 500: a truncated stream broken/,
    );
    await assert.rejects(
      warmUp({ dir, user: 'root', timeoutMs: 300, rpc: () => undefined }),
      /the warm-up's \/process.Process\/Start did not end in time/,
    );
    assert.deepEqual(readdirSync(dir), []);
  });

  it('a command stream kept alive forever ends at the overall deadline; no socket is left', async () => {
    const dir = join(base, 'forever');
    const timers: NodeJS.Timeout[] = [];
    const t0 = Date.now();
    await assert.rejects(
      warmUp({
        dir,
        user: 'root',
        // Silence would end it in 300 ms; a keep-alive every 50 ms never lets it.
        timeoutMs: 300,
        deadlineMs: 1000,
        rpc: (_req, res) => {
          res.writeHead(200, { 'content-type': 'application/connect+json' });
          timers.push(
            setInterval(() => {
              res.write(Buffer.from([0, 0, 0, 0, 2, 123, 125]));
            }, 50),
          );
        },
      }),
      /the warm-up did not end in time: \/process.Process\/Start was still running/,
    );
    for (const t of timers) clearInterval(t);
    const took = Date.now() - t0;
    assert.ok(took >= 1000 && took < 5000, `ended after ${took} ms`);
    assert.deepEqual(readdirSync(dir), []);
  });
});
