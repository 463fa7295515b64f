/** waitGuestReady: what a caller learns from a guest whose agent never comes up. */
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { test } from 'node:test';
import type { KilnError } from '../core/errors.ts';
import { HttpGuestClient } from './guest-client.ts';
import { waitGuestReady } from './guest-ready.ts';

test('a guest that never answers /health: the error names the console, a dead VM at once', async () => {
  // Accepts connections and never answers, like a port forward to a guest still booting.
  const sockets: Socket[] = [];
  const mute = createServer((s) => sockets.push(s));
  await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(mute.address() as AddressInfo).port}`;
  const guest = new HttpGuestClient({ baseUrl: url });
  const consoleTail = (): Promise<string[]> =>
    Promise.resolve(['[    1.0] EXT4-fs (vda): recovery complete', 'kiln-init: mounting /proc']);
  try {
    await assert.rejects(
      waitGuestReady(guest, {
        what: url,
        timeoutMs: 300,
        attemptTimeoutMs: 100,
        alive: () => Promise.resolve(true),
        consoleTail,
      }),
      (e: KilnError) => {
        assert.equal(e.code, 'timeout');
        assert.match(e.message, /did not answer within 300 ms/);
        assert.match(e.message, /last console line: kiln-init: mounting \/proc$/);
        assert.deepEqual(e.details?.['console'], [
          '[    1.0] EXT4-fs (vda): recovery complete',
          'kiln-init: mounting /proc',
        ]);
        return true;
      },
    );
    let asked = 0;
    const t0 = Date.now();
    await assert.rejects(
      waitGuestReady(guest, {
        what: url,
        timeoutMs: 60_000,
        attemptTimeoutMs: 100,
        alive: () => Promise.resolve(++asked < 2),
        consoleTail: () => Promise.resolve([]),
      }),
      (e: KilnError) => {
        assert.equal(e.code, 'guest_agent_error');
        assert.match(e.message, /^the VM died before .* answered \(last: .*\)$/);
        assert.equal(e.details, undefined, 'an empty console adds nothing');
        return true;
      },
    );
    assert.equal(asked, 2);
    assert.ok(Date.now() - t0 < 5000, 'a dead VM is not waited for');
  } finally {
    for (const s of sockets) s.destroy();
    mute.close();
  }
});
