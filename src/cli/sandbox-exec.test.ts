/**
 * `kiln sandbox exec` with piped input, run as the real CLI against the native API on the state
 * dir's socket (fake-driver service; its guest runs a command with stdin as `cat`): the input
 * reaches the command byte for byte and comes back, `--no-stdin` keeps it away, and the stdin
 * route refuses bad requests. The same with a real guest: test/integration/daemon.test.ts.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { describe, it } from 'node:test';
import { cliOnHarness } from '../../test/helpers/cli.ts';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('kiln sandbox exec with stdin', () => {
  const { kiln, kilnWithInput, socket } = cliOnHarness('kiln-cli-stdin-');
  let sbx = '';
  const sandbox = async (): Promise<string> => {
    if (!sbx) {
      const s = await kiln('sandbox', 'create', '--json');
      assert.equal(s.status, 0, s.stderr);
      sbx = (JSON.parse(s.stdout) as { sandboxId: string }).sandboxId;
    }
    return sbx;
  };

  it('echo hi | kiln sandbox exec SBX -- cat prints hi', async () => {
    const r = await kilnWithInput(Buffer.from('hi\n'), 'sandbox', 'exec', await sandbox(), '--', 'cat');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'hi\n');
  });

  it('passes a few MB of binary input through unchanged', async () => {
    const input = randomBytes(3 << 20);
    const r = await kilnWithInput(input, 'sandbox', 'exec', await sandbox(), '--', 'cat');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.out.length, input.length);
    assert.equal(sha(r.out), sha(input));
  });

  it('--no-stdin keeps the input from the command; /dev/null is passed on as empty input', async () => {
    const id = await sandbox();
    const r = await kilnWithInput(Buffer.from('unread'), 'sandbox', 'exec', id, '--no-stdin', '--', 'cat');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'ran cat\n', 'run without stdin (the fake guest names the command)');
    // /dev/null is redirected input too: passed on, it is empty.
    const devNull = await kiln('sandbox', 'exec', id, '--', 'cat');
    assert.equal(devNull.status, 0, devNull.stderr);
    assert.equal(devNull.stdout, '');
  });

  it('the stdin route refuses a bad pid and an unknown sandbox', async () => {
    const post = (path: string): Promise<{ status: number; body: { code?: string; message?: string } }> =>
      new Promise((resolve, reject) => {
        const req = request({ socketPath: socket, method: 'POST', path }, (res) => {
          let text = '';
          res.setEncoding('utf8').on('data', (d: string) => (text += d));
          res.on('end', () => {
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as { code?: string } });
          });
        });
        req.on('error', reject);
        req.end('input');
      });
    const bad = await post(`/v1/sandboxes/${await sandbox()}/processes/abc/stdin`);
    assert.equal(bad.status, 400);
    assert.match(bad.body.message ?? '', /pid: "abc" is not a process id/);
    const gone = await post('/v1/sandboxes/sbx-nosuch/processes/5/stdin');
    assert.equal(gone.status, 404);
    assert.equal(gone.body.code, 'not_found');
  });
});
