import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseNofile, planListeners, readNofile } from './limits.ts';

const PROC = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max processes             95636                95636                processes
Max open files            1024                 524288               files
Max locked memory         8388608              8388608              bytes
`;

/** Descriptors the listeners may use at most: the proxy's connections cost two each. */
const clientFds = (p: ReturnType<typeof planListeners>): number =>
  p.native.maxConnections + p.e2bApi.maxConnections + 2 * p.envdProxy.maxConnections;

describe('descriptor limits and listener caps', () => {
  it('parses /proc/<pid>/limits; this process has one', () => {
    assert.deepEqual(parseNofile(PROC), { soft: 1024, hard: 524288 });
    assert.deepEqual(
      parseNofile(PROC.replace('1024                 524288', 'unlimited            unlimited')),
      {
        soft: Infinity,
        hard: Infinity,
      },
    );
    assert.equal(parseNofile('nothing here'), undefined);
    const mine = readNofile();
    assert.ok(mine && mine.soft > 0 && mine.soft <= mine.hard, JSON.stringify(mine));
    // Node raises its soft limit to the hard one at start-up (to at most 2^20 when the hard
    // limit is unlimited); kilnd relies on it rather than on a launcher.
    assert.ok(mine.soft === mine.hard || (mine.hard === Infinity && mine.soft >= 1024), JSON.stringify(mine));
    assert.equal(readNofile('/nonexistent/limits'), undefined);
  });

  it('client connections stay well under the limit, with a reserve kept back, at every size', () => {
    for (const nofile of [256, 512, 1024, 4096, 20_000, 65_536, 524_288, 1 << 20, Infinity]) {
      const p = planListeners(nofile);
      const total = clientFds(p);
      assert.ok(p.reserve >= Math.min(256, p.nofile / 2), `${nofile}: reserve ${p.reserve}`);
      assert.ok(total + p.reserve <= p.nofile, `${nofile}: ${total} + ${p.reserve} > ${p.nofile}`);
      for (const l of [p.native, p.e2bApi, p.envdProxy]) assert.ok(l.maxConnections >= 8);
    }
    // The numbers for this project's machines (a hard limit of 20000), as documented.
    const p = planListeners(20_000);
    assert.deepEqual(
      [p.reserve, p.native.maxConnections, p.e2bApi.maxConnections, p.envdProxy.maxConnections],
      [5000, 1024, 4096, 4500],
    );
    assert.equal(clientFds(p), 14_120);
    // A huge limit: caps, not shares, bound each listener.
    const big = planListeners(1 << 20);
    assert.deepEqual(
      [big.native.maxConnections, big.e2bApi.maxConnections, big.envdProxy.maxConnections],
      [1024, 4096, 8192],
    );
  });

  it('request deadlines only where request bodies are small; overrides replace single values', () => {
    const p = planListeners(20_000, { e2bApi: { headersTimeoutMs: 500, maxConnections: 7 } });
    assert.equal(p.native.requestTimeoutMs, 0, 'imports stream archives of any size');
    assert.equal(p.envdProxy.requestTimeoutMs, 0, 'Connect client streams (stdin) last as long as a command');
    assert.equal(p.e2bApi.requestTimeoutMs, 60_000);
    assert.deepEqual([p.e2bApi.headersTimeoutMs, p.e2bApi.maxConnections], [500, 7]);
    assert.equal(p.native.headersTimeoutMs, 15_000);
  });
});
