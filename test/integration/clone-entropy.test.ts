/**
 * Clones must not share randomness (issue 14): every sandbox restored from one snapshot wakes
 * with the snapshot's kernel CRNG state, so without a fresh seed two clones read the same bytes
 * from /dev/urandom. kilnd's /init hands each guest 64 fresh bytes that the agent adds to the
 * kernel's pool (RNDADDENTROPY) and re-keys the CRNG with (RNDRESEEDCRNG) before answering.
 * Real QEMU guests: two sandboxes from one template, then a fork of a running one into two.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { HttpGuestClient, type GuestClient } from '../../src/daemon/guest-client.ts';
import type { SandboxService } from '../../src/daemon/sandbox-service.ts';
import { realHost, type RealHost } from '../helpers/service.ts';

/** The first thing each clone does after create: 32 bytes of /dev/urandom, in hex. */
const READ = 'head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n"';

describe('clones of one snapshot do not share randomness (real guests)', { timeout: 900_000 }, () => {
  let host: RealHost;
  let svc: SandboxService;
  /** What each guest agent said of its /init's entropy seed, in order. */
  const entropy: (string | undefined)[] = [];
  before(async () => {
    host = await realHost({ prefix: 'kiln-rng-' });
    svc = host.service({
      guest: (g): GuestClient => {
        const c = new HttpGuestClient(g);
        return {
          health: (ms) => c.health(ms),
          exec: (cmd, o) => c.exec(cmd, o),
          upload: (p, b, o) => c.upload(p, b, o),
          writeStdin: (pid, input, o) => c.writeStdin(pid, input, o),
          metrics: () => c.metrics(),
          init: async (body, presented) => {
            const r = await c.init(body, presented);
            entropy.push(r.entropy);
            return r;
          },
        };
      },
    });
    await svc.buildTemplate('base', host.image, { memoryMiB: 512, vcpus: 1 });
  });
  after(() => host.close());

  const urandom = async (id: string): Promise<string> => {
    const r = await svc.exec(id, READ);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.match(r.stdout, /^[0-9a-f]{64}$/);
    return r.stdout;
  };

  it('two sandboxes created from one template read different bytes at once', async () => {
    entropy.length = 0;
    const [a, b] = await Promise.all([svc.create({ template: 'base' }), svc.create({ template: 'base' })]);
    const [ra, rb] = await Promise.all([urandom(a.id), urandom(b.id)]);
    assert.notEqual(ra, rb, 'the two clones read the same /dev/urandom bytes');
    assert.deepEqual(entropy, ['reseeded', 'reseeded'], 'each agent reseeded its CRNG from /init');
    await Promise.all([svc.kill(a.id), svc.kill(b.id)]);
  });

  it('the clones of a fork read different bytes at once', async () => {
    const src = await svc.create({ template: 'base' });
    entropy.length = 0;
    const f = await svc.fork(src.id, { count: 2 });
    const ids = f.results.map((r) => {
      assert.ok('sandbox' in r, 'error' in r ? r.error.message : '');
      return r.sandbox.id;
    });
    assert.equal(ids.length, 2);
    const [ra, rb] = await Promise.all(ids.map(urandom));
    assert.notEqual(ra, rb, 'the two forks read the same /dev/urandom bytes');
    assert.deepEqual(entropy, ['reseeded', 'reseeded']);
    for (const id of [...ids, src.id]) await svc.kill(id);
  });
});
