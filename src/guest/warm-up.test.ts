/**
 * The agent's warm-up (warm-up.ts): one command through the agent's own handler before `ready`,
 * over a root-only socket that is gone afterwards; a warm-up that fails or hangs is logged and
 * never keeps the agent from starting.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createAgent } from './agent.ts';
import { warmUp } from './warm-up.ts';

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
    const agent = createAgent({ defaultUser: 'root', warmUp: true, ptyDir: run, log: (l) => logs.push(l) });
    try {
      await agent.ready;
      assert.match(logs.join('\n'), /warm-up: \/bin\/true ran through the handler in \d+ ms/);
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
      /the warm-up command answered 500: broken/,
    );
    await assert.rejects(
      warmUp({ dir, user: 'root', timeoutMs: 300, rpc: () => undefined }),
      /the warm-up command did not end in time/,
    );
    assert.deepEqual(readdirSync(dir), []);
  });
});
