/**
 * Clones must not share randomness (issue 14): every /init kilnd sends after a restore, resume,
 * fork or cold boot carries a fresh 64-byte seed for the guest's kernel pool. The seed is a
 * secret of that guest: it never reaches kilnd's log or the sandbox's events.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { createLogger } from '../../core/log.ts';
import { NOW, ServiceFixture } from '../testing/fixtures.ts';

describe('the entropy seed of /init (fake driver)', () => {
  let fx: ServiceFixture;
  const lines: string[] = [];
  beforeEach(async () => {
    lines.length = 0;
    const destination = new Writable({
      write(chunk: Buffer, _enc, cb): void {
        lines.push(chunk.toString('utf8'));
        cb();
      },
    });
    const log = createLogger({ level: 'trace', destination });
    fx = await ServiceFixture.start({ now: NOW, base: true, deps: { log } });
  });
  afterEach(() => fx.close());

  it('every create, resume, fork clone and cold resume sends its own 64 fresh bytes, never logged', async () => {
    const [a, b] = await Promise.all([
      fx.svc.create({ template: 'base' }),
      fx.svc.create({ template: 'base' }),
    ]);
    await fx.svc.pause(a.id);
    await fx.svc.resume(a.id);
    await fx.svc.pause(b.id);
    await fx.svc.resume(b.id, { memory: false });
    const f = await fx.svc.fork(a.id, { count: 2 });
    assert.equal(f.results.filter((r) => 'sandbox' in r).length, 2);
    const seeds = fx.guests.inits.map((i) => i.body.entropySeed ?? '');
    assert.equal(seeds.length, 6, 'two creates, two resumes, two fork clones');
    for (const s of seeds) assert.equal(Buffer.from(s, 'base64').length, 64, s);
    assert.equal(new Set(seeds).size, seeds.length, 'no seed is sent twice');
    assert.ok(
      lines.some((l) => l.includes('"initMs"')),
      'the boots were logged',
    );
    const seen = (s: string): boolean =>
      lines.some((l) => l.includes(s)) ||
      [a.id, b.id].some((id) => JSON.stringify(fx.store.listEvents(id)).includes(s));
    for (const s of seeds) assert.equal(seen(s), false, 'a seed reached the log or the events');
  });

  it('warns when the guest did not reseed its CRNG (an agent that ignores the seed)', async () => {
    const svc = fx.restarted({
      guest: () => ({ ...fx.guests.client(), init: () => Promise.resolve({ entropy: undefined }) }),
    });
    await svc.create({ template: 'base' });
    const warn = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l['level'] === 40);
    assert.equal(warn?.['msg'], 'the guest did not reseed its CRNG from /init');
    assert.equal(warn['entropy'], 'ignored');
  });
});
