import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, connect, type Server } from 'node:net';
import { after, before, beforeEach, test } from 'node:test';
import type { EgressRules } from '../core/network-policy.ts';
import { dnsResolver, EgressProxy, type EgressProxyDecision, type EgressProxyOpts } from './egress-proxy.ts';
import { startFakeDns } from './testing/dns-server.ts';
import { captureClientHello } from './testing/tls-hello.ts';

// Loopback only. The "guest" connects from 127.0.0.1; upstreams listen on 127.0.0.2 (allowed by
// an explicit allowOut CIDR, since 127/8 is always denied) and nothing is allowed on 127.0.0.3.

const RULES: EgressRules = {
  allowOut: ['allowed.test', '*.wild.test', 'evil.test', 'multi.test', 'down.test', '127.0.0.2'],
  denyOut: [],
  internet: false,
};
const NAMES: Record<string, string[]> = {
  'allowed.test': ['127.0.0.2'],
  'a.b.wild.test': ['127.0.0.2'],
  'evil.test': ['127.0.0.3', '::ffff:169.254.169.254'],
  'multi.test': ['127.0.0.3', '127.0.0.2'],
  'down.test': ['127.0.0.4'],
};

let upstream: Server;
let upstreamPort = 0;
const resolved: string[] = [];
let decisions: EgressProxyDecision[] = [];

/** The upstream: answers an HTTP request head with which address it is, else echoes (half-close aware). */
function startUpstream(): Promise<void> {
  upstream = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined);
    let first = true;
    s.on('data', (c: Buffer) => {
      const text = c.toString('latin1');
      if (first && text.startsWith('GET ')) {
        s.end(`HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\nhi ${s.localAddress ?? ''}`);
      } else if (text.includes('KILL')) s.resetAndDestroy();
      else s.write(c);
      first = false;
    });
    s.on('end', () => s.end());
  });
  upstream.listen(0, '127.0.0.2');
  return once(upstream, 'listening').then(() => {
    upstreamPort = (upstream.address() as { port: number }).port;
  });
}

async function startProxy(extra: Partial<EgressProxyOpts> = {}): Promise<EgressProxy> {
  return EgressProxy.start({
    lookup: (remote) => (remote === '127.0.0.1' ? { sandboxId: 'sbx-1', egress: RULES } : undefined),
    resolve: async (name) => {
      resolved.push(name);
      const hit = NAMES[name];
      if (!hit) throw Object.assign(new Error('not found'), { code: 'ENOTFOUND' });
      return Promise.resolve(hit);
    },
    onDecision: (d) => decisions.push(d),
    upstreamPorts: { http: upstreamPort, tls: upstreamPort },
    ...extra,
  });
}

interface Exchange {
  data: Buffer;
  text: string;
}

/** Sends `bytes` (then FIN unless `keepOpen`), collects everything until the socket closes. */
async function exchange(
  port: number,
  bytes: Buffer | string,
  opts: { keepOpen?: boolean; localAddress?: string } = {},
): Promise<Exchange> {
  const s = connect({
    host: '127.0.0.1',
    port,
    localAddress: opts.localAddress ?? '127.0.0.1',
    allowHalfOpen: true,
  });
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  s.on('end', () => s.end());
  s.on('error', () => undefined);
  if (bytes.length > 0) s.write(bytes);
  if (!opts.keepOpen) s.end();
  await once(s, 'close');
  const data = Buffer.concat(chunks);
  return { data, text: data.toString('latin1') };
}

const get = (host: string): string => `GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`;
let proxy: EgressProxy;

before(async () => {
  await startUpstream();
  proxy = await startProxy();
});
after(async () => {
  await proxy.close();
  upstream.close();
});
beforeEach(() => {
  decisions = [];
  resolved.length = 0;
});

test('http: an allowed name reaches its address; the decision is reported', async () => {
  const r = await exchange(proxy.port('http'), get('Allowed.Test:80'));
  assert.match(r.text, /^HTTP\/1\.1 200 OK/);
  assert.match(r.text, /hi 127\.0\.0\.2$/);
  assert.deepEqual(decisions, [
    {
      sandboxId: 'sbx-1',
      mode: 'http',
      host: 'Allowed.Test',
      allowed: true,
      reason: 'allowed.test: 127.0.0.2 is allowed by allowOut 127.0.0.2/32',
    },
  ]);
  assert.deepEqual(resolved, ['allowed.test']);
  await proxy.whenIdle();
  assert.equal(proxy.openSockets, 0);
});

test('http: a wildcard rule matches a deeper name; the first allowed resolved address is used', async () => {
  assert.match((await exchange(proxy.port('http'), get('a.b.wild.test'))).text, /hi 127\.0\.0\.2$/);
  assert.match((await exchange(proxy.port('http'), get('multi.test'))).text, /hi 127\.0\.0\.2$/);
  assert.equal(
    decisions.every((d) => d.allowed),
    true,
  );
});

test('http: a name allowed by a domain rule but resolving into a denied range gets 403, no connection', async () => {
  const r = await exchange(proxy.port('http'), get('evil.test'));
  assert.match(r.text, /^HTTP\/1\.1 403 Forbidden\r\n/);
  assert.match(
    r.text,
    /\r\n\r\nkiln egress: evil\.test refused: evil\.test: 127\.0\.0\.3 is in the always-denied range 127\.0\.0\.0\/8/,
  );
  assert.equal(decisions[0]?.allowed, false);
  await proxy.whenIdle();
});

test('http: with internet off, a name no rule allows is refused without being resolved', async () => {
  const r = await exchange(proxy.port('http'), get('other.test'));
  assert.match(
    r.text,
    /403 Forbidden[\s\S]*other\.test: no allowOut domain rule matches and internet access is off\n$/,
  );
  assert.deepEqual(resolved, []);
});

test('http: IP-literal hosts are decided as addresses', async () => {
  assert.match((await exchange(proxy.port('http'), get('127.0.0.2'))).text, /hi 127\.0\.0\.2$/);
  const r = await exchange(proxy.port('http'), get('127.0.0.3'));
  assert.match(r.text, /403 Forbidden[\s\S]*always-denied range 127\.0\.0\.0\/8/);
  assert.deepEqual(resolved, []);
});

test('http: resolver failure -> 403; an allowed address that refuses connections -> 502', async () => {
  const open = await startProxy({
    lookup: () => ({ sandboxId: 'sbx-2', egress: { ...RULES, internet: true } }),
  });
  try {
    assert.match(
      (await exchange(open.port('http'), get('nowhere.test'))).text,
      /403[\s\S]*could not resolve \(ENOTFOUND\)/,
    );
    const r = await exchange(proxy.port('http'), get('127.0.0.2'));
    assert.match(r.text, /200 OK/);
  } finally {
    await open.close();
  }
  const down = await startProxy({
    lookup: () => ({ sandboxId: 'sbx-3', egress: { ...RULES, allowOut: [...RULES.allowOut, '127.0.0.4'] } }),
  });
  try {
    const r = await exchange(down.port('http'), get('down.test'));
    assert.match(r.text, /^HTTP\/1\.1 502 Bad Gateway[\s\S]*no address of down\.test accepted a connection/);
    await down.whenIdle();
  } finally {
    await down.close();
  }
});

test('http: malformed, oversized and truncated heads are refused and closed', async () => {
  const port = proxy.port('http');
  assert.match((await exchange(port, '\x00\x01garbage')).text, /403[\s\S]*not an HTTP\/1\.x request/);
  assert.match((await exchange(port, 'GET / HTTP/1.1\r\n\r\n')).text, /no Host header/);
  const big = `GET / HTTP/1.1\r\nX: ${'a'.repeat(17 * 1024)}`;
  assert.match(
    (await exchange(port, big, { keepOpen: true })).text,
    /no complete request head in the first 16384 bytes/,
  );
  const cut = await exchange(port, 'GET / HTTP/1.1\r\nHost: allowed.te');
  assert.match(cut.text, /closed before a request head/);
  await proxy.whenIdle();
  assert.equal(proxy.openSockets, 0);
});

test('slow loris: a head not complete by the deadline is refused and the socket closed', async () => {
  const slow = await startProxy({ headTimeoutMs: 150 });
  try {
    const r = await exchange(slow.port('http'), 'GET / HTTP/1.1\r\nHost: allow', { keepOpen: true });
    assert.match(r.text, /403[\s\S]*no complete request head within 150 ms/);
    const t = exchange(slow.port('tls'), Buffer.from([0x16, 3, 1]), { keepOpen: true });
    assert.equal((await t).data.length, 0);
    await slow.whenIdle();
  } finally {
    await slow.close();
  }
});

test('tls: SNI of a real ClientHello decides; bytes are relayed intact both ways with half-close', async () => {
  const hello = await captureClientHello('allowed.test');
  const payload = Buffer.concat([hello, Buffer.from('after the hello')]);
  const r = await exchange(proxy.port('tls'), payload);
  assert.deepEqual(r.data, payload, 'the echo upstream got exactly what the guest sent');
  assert.deepEqual(decisions, [
    {
      sandboxId: 'sbx-1',
      mode: 'tls',
      host: 'allowed.test',
      allowed: true,
      reason: 'allowed.test: 127.0.0.2 is allowed by allowOut 127.0.0.2/32',
    },
  ]);
  await proxy.whenIdle();
  assert.equal(proxy.openSockets, 0);
});

test('tls: no SNI, a denied name, garbage and a truncated hello are closed without a byte', async () => {
  const port = proxy.port('tls');
  for (const [input, why] of [
    [await captureClientHello(), /no SNI/],
    [await captureClientHello('other.test'), /internet access is off/],
    [await captureClientHello('evil.test'), /always-denied/],
    [Buffer.from('GET / HTTP/1.1\r\n\r\n'), /not a TLS handshake/],
  ] as const) {
    decisions = [];
    const r = await exchange(port, input);
    assert.equal(r.data.length, 0);
    assert.equal(decisions[0]?.allowed, false);
    assert.match(decisions[0].reason, why);
  }
  const hello = await captureClientHello('allowed.test');
  decisions = [];
  assert.equal((await exchange(port, hello.subarray(0, 40))).data.length, 0);
  assert.match(decisions[0]?.reason ?? '', /closed before a request head/);
  await proxy.whenIdle();
});

test('an unknown source address is closed at once and not reported', async () => {
  const r = await exchange(proxy.port('http'), get('allowed.test'), {
    localAddress: '127.0.0.9',
    keepOpen: true,
  });
  assert.equal(r.data.length, 0);
  assert.deepEqual(decisions, []);
});

test('an upstream reset mid-relay takes the guest connection with it', async () => {
  const s = connect({ host: '127.0.0.1', port: proxy.port('tls') });
  s.on('error', () => undefined);
  s.write(await captureClientHello('allowed.test'));
  await once(s, 'data'); // the echo: the relay is up
  const closed = once(s, 'close');
  s.write('KILL');
  await closed;
  await proxy.whenIdle();
  assert.equal(proxy.openSockets, 0);
});

test('close() ends live relays and stops listening', async () => {
  const live = await startProxy();
  const s = connect({ host: '127.0.0.1', port: live.port('tls') });
  s.on('error', () => undefined);
  s.write(await captureClientHello('allowed.test'));
  await once(s, 'data');
  assert.equal(live.openSockets, 2);
  const closed = once(s, 'close');
  const httpPort = live.port('http');
  await live.close();
  await closed;
  await live.whenIdle();
  const refused = connect({ host: '127.0.0.1', port: httpPort });
  const [err] = (await once(refused, 'error')) as [NodeJS.ErrnoException];
  assert.equal(err.code, 'ECONNREFUSED');
});

test('a reporter that throws does not change the outcome', async () => {
  const p = await startProxy({
    onDecision: () => {
      throw new Error('boom');
    },
  });
  try {
    assert.match((await exchange(p.port('http'), get('allowed.test'))).text, /200 OK/);
  } finally {
    await p.close();
  }
});

test('fuzz: random bytes on both listeners never crash the proxy; every connection closes', async () => {
  const p = await startProxy({ headTimeoutMs: 300 });
  let seed = 7;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  try {
    const runs: Promise<Exchange>[] = [];
    for (let i = 0; i < 200; i++) {
      const bytes = Buffer.alloc(1 + rand(20_000));
      for (let k = 0; k < bytes.length; k++) bytes[k] = rand(256);
      // Some start like the real thing, so the parsers get past their first checks.
      if (i % 4 === 1) bytes.write('GET / HTTP/1.1\r\nHost: ', 'latin1');
      if (i % 4 === 2) bytes.set([0x16, 3, 1, rand(0x41), rand(256), 1]);
      runs.push(exchange(p.port(i % 2 ? 'tls' : 'http'), bytes, { keepOpen: i % 3 === 0 }));
    }
    const results = await Promise.all(runs);
    assert.equal(results.length, 200);
    assert.ok(decisions.every((d) => !d.allowed));
    await p.whenIdle();
    assert.equal(p.openSockets, 0);
    assert.match((await exchange(p.port('http'), get('allowed.test'))).text, /200 OK/, 'still serving');
  } finally {
    await p.close();
  }
});

test('the default resolver asks the configured DNS servers (A then AAAA) and the proxy uses it', async () => {
  const dns = await startFakeDns({
    'svc.test': ['127.0.0.2', '2001:db8::7'],
    'v6only.test': ['2001:db8::8'],
  });
  try {
    const resolve = dnsResolver([dns.server], 2000);
    assert.deepEqual(await resolve('svc.test'), ['127.0.0.2', '2001:db8::7']);
    assert.deepEqual(await resolve('v6only.test'), ['2001:db8::8']);
    await assert.rejects(resolve('missing.test'), (e: NodeJS.ErrnoException) => e.code === 'ENOTFOUND');
    const p = await EgressProxy.start({
      lookup: () => ({ sandboxId: 'sbx-dns', egress: { ...RULES, allowOut: ['svc.test', '127.0.0.2'] } }),
      dnsServers: [dns.server],
      upstreamPorts: { http: upstreamPort, tls: upstreamPort },
    });
    try {
      dns.queries.length = 0;
      assert.match((await exchange(p.port('http'), get('svc.test'))).text, /hi 127\.0\.0\.2$/);
      assert.deepEqual([...dns.queries].sort(), ['svc.test', 'svc.test']);
    } finally {
      await p.close();
    }
  } finally {
    await dns.close();
  }
});

test('connection caps: per sandbox (a refused extra connection is closed, others live on)', async () => {
  const p = await startProxy({ maxConnectionsPerSandbox: 2 });
  try {
    const hello = await captureClientHello('allowed.test');
    const open = [0, 1].map(() => connect({ host: '127.0.0.1', port: p.port('tls') }));
    for (const s of open) {
      s.on('error', () => undefined);
      s.write(hello);
    }
    await Promise.all(open.map((s) => once(s, 'data')));
    const third = await exchange(p.port('http'), get('allowed.test'), { keepOpen: true });
    assert.equal(third.data.length, 0);
    const closed = open.map((s) => once(s, 'close'));
    for (const s of open) s.end();
    await Promise.all(closed);
    await p.whenIdle();
    assert.match(
      (await exchange(p.port('http'), get('allowed.test'))).text,
      /200 OK/,
      'slots are given back',
    );
  } finally {
    await p.close();
  }
});

test('a guest that leaves while its name is being resolved leaves nothing open', async () => {
  let answer: (a: string[]) => void = () => undefined;
  let markAsked: () => void = () => undefined;
  const asked = new Promise<void>((r) => (markAsked = r));
  const p = await startProxy({
    resolve: () => {
      markAsked();
      return new Promise<string[]>((r) => (answer = r));
    },
  });
  try {
    const s = connect({ host: '127.0.0.1', port: p.port('http') });
    s.on('error', () => undefined);
    s.write(get('allowed.test'));
    await asked;
    const closed = once(s, 'close');
    s.destroy();
    await closed;
    answer(['127.0.0.2']);
    await p.whenIdle();
    assert.equal(p.openSockets, 0);
    assert.equal(decisions.at(-1)?.allowed, true);
  } finally {
    await p.close();
  }
});
