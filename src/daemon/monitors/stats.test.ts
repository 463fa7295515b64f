/**
 * The stats sampler over the fake driver: PSS, costly to read, is read by the background at most
 * every 30 s, and for the API when it is 5 s old.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { SandboxRecord } from '../../core/domain.ts';
import type { ServiceContext } from '../sandbox/context.ts';
import { NOW, ServiceFixture } from '../testing/fixtures.ts';
import { PSS_EVERY_MS, StatsSampler } from './stats.ts';

describe('StatsSampler (fake driver)', () => {
  let fx: ServiceFixture;
  beforeEach(async () => (fx = await ServiceFixture.start({ now: NOW, base: true })));
  afterEach(() => fx.close());

  /** A sampler over the fixture whose /proc reads are counted; each PSS read is 1 MiB more. */
  const counted = (): { sampler: StatsSampler; reads: { cpu: number[]; pss: number[] } } => {
    const reads = { cpu: [] as number[], pss: [] as number[] };
    // What the sampler uses of a service's context: its store, driver, clock and conditions.
    const sc = {
      store: fx.store,
      driver: fx.driver,
      now: () => fx.now,
      watcher: { conditionOf: (r: SandboxRecord) => r.condition },
    } as unknown as ServiceContext;
    const sampler = new StatsSampler(sc, {
      cpuRss: (pid) => {
        reads.cpu.push(pid);
        return { cpuTicks: 100 * reads.cpu.length, rssBytes: 200 << 20 };
      },
      pss: (pid) => {
        reads.pss.push(pid);
        return (60 + reads.pss.length) << 20;
      },
    });
    return { sampler, reads };
  };

  it('reads CPU and RSS every sample, PSS at most every 30 s and afresh for a new VM', async () => {
    const { sampler, reads } = counted();
    const s = await fx.svc.create({ template: 'base' });
    const pid = (await fx.driver.status(s.id)).pid;
    await sampler.sampleAll();
    assert.equal(sampler.history(s.id).at(-1)?.pssBytes, 61 << 20);
    for (let i = 0; i < 5; i++) {
      fx.now += 5000;
      await sampler.sampleAll();
    }
    assert.equal(reads.cpu.length, 6, 'CPU and RSS at every sample');
    assert.deepEqual(reads.pss, [pid], 'PSS once in 25 s');
    assert.equal(sampler.history(s.id).at(-1)?.pssBytes, 61 << 20, 'the last PSS read stands in');
    fx.now += PSS_EVERY_MS - 25_000;
    await sampler.sampleAll();
    assert.equal(reads.pss.length, 2, 'again 30 s after the last read');
    assert.equal(sampler.history(s.id).at(-1)?.pssBytes, 62 << 20);
    // Resumed in a new QEMU: its memory is read at once.
    await fx.svc.pause(s.id);
    await fx.svc.resume(s.id);
    const newPid = (await fx.driver.status(s.id)).pid;
    assert.notEqual(newPid, pid);
    fx.now += 5000;
    await sampler.sampleAll();
    assert.deepEqual(reads.pss, [pid, pid, newPid]);
  });

  it("answers the API with PSS at most 5 s old, and the background's sample while it is", async () => {
    const { sampler, reads } = counted();
    const s = await fx.svc.create({ template: 'base' });
    await sampler.sampleAll();
    assert.equal((await sampler.stats(s.id)).pssBytes, 61 << 20, 'the background sample, just read');
    fx.now += 4000;
    assert.equal((await sampler.stats(s.id)).pssBytes, 61 << 20, 'still the background sample');
    assert.equal(reads.pss.length, 1);
    // The background took a sample with its PSS of 25 s ago: the API reads PSS again.
    fx.now += 1000;
    await sampler.sampleAll();
    assert.equal(reads.pss.length, 1, 'the background did not read PSS');
    fx.now += 1000;
    assert.equal((await sampler.stats(s.id)).pssBytes, 62 << 20, 'a fresh PSS for the API');
    assert.equal(reads.pss.length, 2);
    fx.now += 1000;
    assert.equal((await sampler.stats(s.id)).pssBytes, 62 << 20, 'reused while 5 s old at most');
    assert.equal(reads.pss.length, 2);
  });
});
