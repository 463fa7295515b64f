/** The envd suite (envd.suite.ts), the pty: create, input, resize, kill. */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import type { Sandbox } from 'e2b';
import { type Current, until } from './helpers.ts';

export function ptyTests(current: () => Current): void {
  describe('pty', () => {
    let sbx: Sandbox;
    let sdk: Current['sdk'];
    before(() => ({ sbx, sdk } = current()));

    it('create, sendInput, resize, and kill', async () => {
      let out = '';
      const dec = new TextDecoder();
      const h = await sbx.pty.create({
        cols: 80,
        rows: 24,
        onData: (d) => void (out += dec.decode(d)),
        timeoutMs: 60_000,
      });
      await sbx.pty.sendInput(h.pid, new TextEncoder().encode('stty size; echo "tty=$(tty)"\n'));
      await until(() => (/24 80/.test(out) && /tty=\/dev\/pts\//.test(out)) || undefined);
      await sbx.pty.resize(h.pid, { cols: 120, rows: 40 });
      await sbx.pty.sendInput(h.pid, new TextEncoder().encode('stty size\n'));
      await until(() => /40 120/.test(out) || undefined);
      assert.equal(await sbx.pty.kill(h.pid), true);
      await assert.rejects(h.wait(), (e) => e instanceof sdk.CommandExitError);
    });
  });
}
