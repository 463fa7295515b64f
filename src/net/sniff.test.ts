import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MAX_CLIENT_HELLO, sniffHttp, sniffTls, type Sniffed } from './sniff.ts';
import { captureClientHello } from './testing/tls-hello.ts';

/** A TLS record-layer ClientHello with the given extensions, each [type, data]. */
function helloWith(extensions: [number, Buffer][], opts: { trailing?: Buffer } = {}): Buffer {
  const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
  const exts = Buffer.concat(extensions.map(([t, d]) => Buffer.concat([u16(t), u16(d.length), d])));
  const body = Buffer.concat([
    u16(0x0303),
    Buffer.alloc(32, 7),
    Buffer.from([0]),
    u16(2),
    u16(0x1301),
    Buffer.from([1, 0]),
    u16(exts.length),
    exts,
    opts.trailing ?? Buffer.alloc(0),
  ]);
  const hs = Buffer.concat([Buffer.from([1, 0, body.length >> 8, body.length & 0xff]), body]);
  return Buffer.concat([Buffer.from([0x16, 3, 1]), u16(hs.length), hs]);
}

const sniEntry = (type: number, name: Buffer): Buffer =>
  Buffer.concat([Buffer.from([type, name.length >> 8, name.length & 0xff]), name]);
const sniExt = (...entries: Buffer[]): [number, Buffer] => {
  const list = Buffer.concat(entries);
  return [0, Buffer.concat([Buffer.from([list.length >> 8, list.length & 0xff]), list])];
};

const host = (r: Sniffed): string => {
  assert.equal(r.kind, 'host', JSON.stringify(r));
  return (r as { host: string }).host;
};
const refused = (r: Sniffed, why: RegExp): void => {
  assert.equal(r.kind, 'refuse', JSON.stringify(r));
  assert.match((r as { reason: string }).reason, why);
};

test('sniffTls reads the SNI of a real node:tls ClientHello, also byte by byte and re-fragmented', async () => {
  const hello = await captureClientHello('Api.Example.com');
  assert.equal(host(sniffTls(hello)), 'Api.Example.com');
  for (let n = 0; n < hello.length; n++)
    assert.equal(sniffTls(hello.subarray(0, n)).kind, 'more', `prefix ${n}`);
  // The same handshake split over three records (RFC 8446 allows fragmenting handshake messages).
  const hs = hello.subarray(5);
  const cuts = [0, 3, 100, hs.length];
  const records = cuts.slice(1).map((end, i) => {
    const part = hs.subarray(cuts[i], end);
    return Buffer.concat([Buffer.from([0x16, 3, 1, part.length >> 8, part.length & 0xff]), part]);
  });
  assert.equal(host(sniffTls(Buffer.concat(records))), 'Api.Example.com');
});

test('sniffTls refuses a ClientHello without SNI (node:tls sends none to an IP)', async () => {
  refused(sniffTls(await captureClientHello()), /no SNI/);
  refused(sniffTls(helloWith([[10, Buffer.from([0, 2, 0, 29])]])), /no SNI/);
});

test('sniffTls refuses non-TLS input at the first byte and bad record headers', () => {
  refused(sniffTls(Buffer.from('G')), /not a TLS handshake/);
  refused(sniffTls(Buffer.from([0x17, 3, 3, 0, 5])), /not a TLS handshake/);
  refused(sniffTls(Buffer.from([0x16, 2])), /version/);
  refused(sniffTls(Buffer.from([0x16, 3, 1, 0, 0])), /record length 0/);
  refused(sniffTls(Buffer.from([0x16, 3, 1, 0x40, 0x01])), /record length 16385/);
  refused(sniffTls(Buffer.from([0x16, 3, 1, 0, 4, 2, 0, 0, 0])), /not a ClientHello/);
  const huge = MAX_CLIENT_HELLO + 1;
  refused(
    sniffTls(Buffer.from([0x16, 3, 1, 0, 4, 1, huge >> 16, (huge >> 8) & 0xff, huge & 0xff])),
    /too large/,
  );
  // A second record that is not a handshake while the ClientHello is incomplete.
  refused(
    sniffTls(Buffer.from([0x16, 3, 1, 0, 4, 1, 0, 0, 9, 0x15, 3, 1, 0, 2, 2, 0])),
    /not a TLS handshake/,
  );
});

test('sniffTls refuses malformed ClientHello bodies with a reason', () => {
  const good = sniEntry(0, Buffer.from('a.example'));
  assert.equal(host(sniffTls(helloWith([sniExt(good)]))), 'a.example');
  refused(sniffTls(helloWith([sniExt(good), sniExt(good)])), /repeats extension 0/);
  refused(sniffTls(helloWith([sniExt(good, sniEntry(0, Buffer.from('b.example')))])), /more than one SNI/);
  refused(sniffTls(helloWith([sniExt(sniEntry(0, Buffer.from('a\0.example')))])), /not printable ASCII/);
  refused(sniffTls(helloWith([sniExt(sniEntry(0, Buffer.alloc(0)))])), /empty/);
  refused(sniffTls(helloWith([sniExt(sniEntry(1, Buffer.from('x')))])), /holds no host name/);
  refused(sniffTls(helloWith([sniExt(good)], { trailing: Buffer.from([0]) })), /bytes after its extensions/);
  // An extension claiming more bytes than the block holds.
  const lying = helloWith([sniExt(good)]);
  const extLenAt = 5 + 4 + 2 + 32 + 1 + 2 + 2 + 2; // record, handshake, version, random, sid, suites, compression
  lying.writeUInt16BE(lying.readUInt16BE(extLenAt + 4) + 1, extLenAt + 4);
  refused(sniffTls(lying), /runs past the end/);
  // A session id over 32 bytes, an odd cipher suite list.
  const sid = helloWith([sniExt(good)]);
  sid[5 + 4 + 2 + 32] = 33;
  assert.equal(sniffTls(sid).kind, 'refuse');
});

test('sniffTls survives random mutations of a real ClientHello (never throws; names are printable)', async () => {
  const hello = await captureClientHello('fuzz.example.com');
  let seed = 42;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  for (let i = 0; i < 5000; i++) {
    const m = Buffer.from(hello.subarray(0, 1 + rand(hello.length)));
    for (let k = rand(4); k >= 0; k--) m[rand(m.length)] = rand(256);
    const r = sniffTls(m);
    if (r.kind === 'host') assert.match(r.host, /^[\x21-\x7e]{1,255}$/);
  }
});

test('sniffHttp reads Host without its port, bracketed IPv6, and waits for the whole head', () => {
  const req = 'GET /x HTTP/1.1\r\nUser-Agent: t\r\nHost: Example.com:8080\r\nAccept: */*\r\n\r\nBODY';
  assert.equal(host(sniffHttp(Buffer.from(req))), 'Example.com');
  for (let n = 0; n < req.indexOf('\r\n\r\n') + 4; n++) {
    assert.equal(sniffHttp(Buffer.from(req.slice(0, n))).kind, 'more', `prefix ${n}`);
  }
  assert.equal(host(sniffHttp(Buffer.from('GET / HTTP/1.0\r\nhost: [::1]:80\r\n\r\n'))), '::1');
  assert.equal(host(sniffHttp(Buffer.from('POST / HTTP/1.1\r\nHOST:   10.0.0.1  \r\n\r\n'))), '10.0.0.1');
  const abs = 'GET http://example.com:80/p HTTP/1.1\r\nHost: example.com\r\n\r\n';
  assert.equal(host(sniffHttp(Buffer.from(abs))), 'example.com');
});

test('sniffHttp refuses what is not one clean HTTP/1.x request head', () => {
  const cases: [string, RegExp][] = [
    ['\x16\x03\x01', /not an HTTP/],
    ['get / HTTP/1.1\r\n', /not an HTTP/],
    ['ABCDEFGHIJKLMNOPQRSTUVWXYZ / HTTP/1.1\r\n', /not an HTTP/],
    ['PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', /request line/],
    ['GET / HTTP/1.1\r\n\r\n', /no Host/],
    ['GET / HTTP/1.1\r\nHost: a.com\r\nHost: b.com\r\n\r\n', /more than one Host/],
    ['GET / HTTP/1.1\r\nHost : a.com\r\n\r\n', /malformed/],
    ['GET / HTTP/1.1\r\nX: y\r\n folded\r\nHost: a.com\r\n\r\n', /malformed/],
    ['GET / HTTP/1.1\r\nHost: a.com\nX: b\r\n\r\n', /NUL or a bare CR\/LF/],
    ['GET / HTTP/1.1\r\nHost: a.com:99999\r\n\r\n', /not a host\[:port\]/],
    ['GET / HTTP/1.1\r\nHost: a.com b.com\r\n\r\n', /not a host\[:port\]/],
    ['GET / HTTP/1.1\r\nHost: ::1\r\n\r\n', /not a host\[:port\]/],
    ['GET / HTTP/1.1\r\nHost: \r\n\r\n', /not a host\[:port\]/],
    ['GET http://evil.com/ HTTP/1.1\r\nHost: good.com\r\n\r\n', /another host/],
    ['GET http://good.com@evil.com/ HTTP/1.1\r\nHost: evil.com\r\n\r\n', /another host/],
  ];
  for (const [input, why] of cases) refused(sniffHttp(Buffer.from(input, 'latin1')), why);
});
