import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { hostResolver } from './host-dns.ts';

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kiln-dns-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const conf = async (name: string, text: string): Promise<string> => {
  const f = join(dir, name);
  await writeFile(f, text);
  return f;
};

it('the first IPv4 nameserver that is not loopback', async () => {
  const f = await conf(
    'a',
    '# comment\nsearch example\nnameserver 127.0.0.53\nnameserver ::1\n  nameserver\t192.0.2.53 # x\nnameserver 198.51.100.1\n',
  );
  assert.equal(hostResolver([f]), '192.0.2.53');
});

it('none usable (only loopback, IPv6, junk), an empty file or no file: undefined', async () => {
  const none = await conf('b', 'nameserver 127.0.0.1\nnameserver fe80::1\nnameserver foo\n');
  assert.equal(hostResolver([none]), undefined);
  assert.equal(hostResolver([await conf('c', '')]), undefined);
  assert.equal(hostResolver([await conf('d', '#nameserver 192.0.2.1\n')]), undefined);
  assert.equal(hostResolver([join(dir, 'missing')]), undefined);
  assert.equal(hostResolver([]), undefined);
});

it("a stub resolver's resolv.conf (127.0.0.53): the next file's nameserver (resolved's upstream)", async () => {
  const stub = await conf('stub', 'nameserver 127.0.0.53\noptions edns0\n');
  const upstream = await conf('upstream', 'nameserver 198.51.100.53\n');
  assert.equal(hostResolver([stub, upstream]), '198.51.100.53');
  assert.equal(hostResolver([join(dir, 'missing'), upstream]), '198.51.100.53');
  assert.equal(
    hostResolver([upstream, await conf('a2', 'nameserver 192.0.2.1\n')]),
    '198.51.100.53',
    'in order',
  );
});
