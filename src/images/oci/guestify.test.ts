import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ensureUser, guestify } from './guestify.ts';

let base: string;
before(async () => {
  base = await mkdtemp(join(tmpdir(), 'kiln-guestify-'));
});
after(async () => {
  await rm(base, { recursive: true, force: true });
});

describe('guestify', () => {
  it('adds user "user" (uid 1000, sudo group, shadow, home) only where the image lacks it', async () => {
    const root = join(base, 'a');
    mkdirSync(join(root, 'etc'), { recursive: true });
    mkdirSync(join(root, 'bin'));
    writeFileSync(join(root, 'bin/bash'), '');
    writeFileSync(
      join(root, 'etc/passwd'),
      'root:x:0:0:root:/root:/bin/bash\nnode:x:1000:1000::/home/node:/bin/sh',
    );
    writeFileSync(join(root, 'etc/group'), 'root:x:0:\nsudo:x:27:\n');
    writeFileSync(join(root, 'etc/shadow'), 'root:*:19000:0:99999:7:::\n');
    assert.equal(await ensureUser(root), true);
    assert.equal(
      readFileSync(join(root, 'etc/passwd'), 'utf8'),
      'root:x:0:0:root:/root:/bin/bash\nnode:x:1000:1000::/home/node:/bin/sh\nuser:x:1000:1000:kiln user:/home/user:/bin/bash\n',
    );
    assert.equal(readFileSync(join(root, 'etc/group'), 'utf8'), 'root:x:0:\nsudo:x:27:user\nuser:x:1000:\n');
    assert.match(readFileSync(join(root, 'etc/shadow'), 'utf8'), /\nuser:\*:/);
    assert.equal(statSync(join(root, 'home/user')).uid, 1000);
    assert.equal(statSync(join(root, 'home/user')).mode & 0o777, 0o750);
    // An image without /home gets one every user can pass through (the user's login shell reads its profile).
    assert.equal(statSync(join(root, 'home')).mode & 0o777, 0o755);
    assert.equal(await ensureUser(root), false, 'a second run finds the user');
  });

  it('writes inside the root even when the image links /etc, /sbin and /opt to host paths', async () => {
    const root = join(base, 'b');
    const outside = join(base, 'outside');
    mkdirSync(join(outside, 'etc'), { recursive: true });
    writeFileSync(join(outside, 'etc/passwd'), 'host:x:0:0::/:/bin/sh\n');
    mkdirSync(root);
    symlinkSync(join(outside, 'etc'), join(root, 'etc'));
    symlinkSync(outside, join(root, 'sbin'));
    symlinkSync('../../../../..' + outside, join(root, 'opt'));
    await guestify(root, { kilnInit: '#!/bin/sh\n', agent: '// agent\n', runtime: [] });
    assert.equal(readFileSync(join(outside, 'etc/passwd'), 'utf8'), 'host:x:0:0::/:/bin/sh\n');
    assert.equal(existsSync(join(outside, 'kiln-init')), false);
    assert.equal(existsSync(join(outside, 'kiln')), false);
    // The links are followed inside the root: /etc is <root>/<outside>/etc there.
    assert.match(
      readFileSync(join(root, outside, 'etc/passwd'), 'utf8'),
      /^user:x:1000:1000:kiln user:\/home\/user:\/bin\/sh\n$/,
    );
    assert.equal(readFileSync(join(root, outside, 'kiln-init'), 'utf8'), '#!/bin/sh\n');
    assert.equal(readFileSync(join(root, outside, 'kiln/agent.mjs'), 'utf8'), '// agent\n');
    assert.match(
      readFileSync(join(root, 'usr/local/sbin/setpriv'), 'utf8'),
      /\/opt\/kiln\/lib\/setpriv "\$@"/,
    );
  });

  it("gives the guest the same modes under kilnd's umask 077", async () => {
    const root = join(base, 'c');
    mkdirSync(root);
    const old = process.umask(0o077);
    try {
      await guestify(root, { kilnInit: '#!/bin/sh\n', agent: '// agent\n', runtime: [] });
    } finally {
      process.umask(old);
    }
    const mode = (p: string): string => (statSync(join(root, p)).mode & 0o7777).toString(8);
    assert.deepEqual(
      [
        'etc',
        'etc/passwd',
        'etc/group',
        'etc/resolv.conf',
        'opt/kiln',
        'opt/kiln/agent.mjs',
        'sbin/kiln-init',
        'tmp',
        'root',
        'home/user',
      ].map(mode),
      ['755', '644', '644', '644', '755', '644', '755', '1777', '700', '750'],
    );
  });
});
