/**
 * Reads the destination name from the first bytes a guest sends (issue 12's egress proxy): the
 * SNI of a TLS ClientHello, or the Host of an HTTP/1.x request head. The bytes are hostile: every
 * length is checked against what is left, nothing is trusted to be in range, and anything odd is
 * refused with a reason rather than guessed at. Both functions are incremental: called again with
 * more bytes until they answer `host` or `refuse` (the caller caps the size and the time).
 */

export type Sniffed = { kind: 'more' } | { kind: 'host'; host: string } | { kind: 'refuse'; reason: string };

const MORE: Sniffed = { kind: 'more' };
const refuse = (reason: string): Sniffed => ({ kind: 'refuse', reason });

/** TLS record and handshake constants (RFC 8446 §5.1, §4). */
const CONTENT_HANDSHAKE = 0x16;
const HANDSHAKE_CLIENT_HELLO = 1;
const EXT_SERVER_NAME = 0;
const NAME_TYPE_HOST = 0;
const MAX_RECORD = 16384;
/** A ClientHello larger than this is refused (post-quantum key shares stay well below it). */
export const MAX_CLIENT_HELLO = 16384;

class Malformed extends Error {}

/** A bounds-checked cursor over a buffer; any read past the end throws Malformed. */
class Reader {
  private off = 0;
  private readonly buf: Buffer;
  private readonly what: string;
  constructor(buf: Buffer, what: string) {
    this.buf = buf;
    this.what = what;
  }
  get left(): number {
    return this.buf.length - this.off;
  }
  bytes(n: number, field: string): Buffer {
    if (n > this.left) throw new Malformed(`${this.what}: ${field} runs past the end`);
    const out = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return out;
  }
  u8(field: string): number {
    return this.bytes(1, field).readUInt8(0);
  }
  u16(field: string): number {
    return this.bytes(2, field).readUInt16BE(0);
  }
  /** A block prefixed by its 1- or 2-byte length. */
  block(lenBytes: 1 | 2, field: string): Reader {
    const n = lenBytes === 1 ? this.u8(`${field} length`) : this.u16(`${field} length`);
    return new Reader(this.bytes(n, field), `${this.what} ${field}`);
  }
}

/**
 * The SNI host name of a TLS ClientHello, possibly fragmented over several handshake records.
 * Refuses: other record types, a ClientHello over {@link MAX_CLIENT_HELLO}, any length that
 * disagrees with its container, a repeated extension, more than one host name, and a ClientHello
 * without SNI (the proxy cannot tell where it goes).
 */
export function sniffTls(buf: Buffer): Sniffed {
  const parts: Buffer[] = [];
  let have = 0;
  let off = 0;
  for (;;) {
    if (buf.length > off && buf[off] !== CONTENT_HANDSHAKE) return refuse('not a TLS handshake');
    if (buf.length > off + 1 && buf[off + 1] !== 3) return refuse('not a TLS record (version)');
    if (buf.length < off + 5) return MORE;
    const len = buf.readUInt16BE(off + 3);
    if (len === 0 || len > MAX_RECORD) return refuse(`bad TLS record length ${len}`);
    if (buf.length < off + 5 + len) return MORE;
    parts.push(buf.subarray(off + 5, off + 5 + len));
    have += len;
    off += 5 + len;
    const hs = Buffer.concat(parts, have);
    if (hs[0] !== HANDSHAKE_CLIENT_HELLO) return refuse('the first handshake message is not a ClientHello');
    if (hs.length < 4) continue;
    const need = 4 + hs.readUIntBE(1, 3);
    if (need > MAX_CLIENT_HELLO) return refuse(`ClientHello of ${need} bytes is too large`);
    if (hs.length < need) continue;
    try {
      return clientHelloSni(new Reader(hs.subarray(4, need), 'ClientHello'));
    } catch (e) {
      if (e instanceof Malformed) return refuse(e.message);
      throw e;
    }
  }
}

function clientHelloSni(r: Reader): Sniffed {
  const version = r.u16('version');
  if (version >> 8 !== 3) return refuse(`ClientHello version 0x${version.toString(16)} is not TLS`);
  r.bytes(32, 'random');
  if (r.block(1, 'session id').left > 32) return refuse('ClientHello session id is longer than 32 bytes');
  const suites = r.block(2, 'cipher suites').left;
  if (suites === 0 || suites % 2 !== 0) return refuse('ClientHello cipher suites are malformed');
  if (r.block(1, 'compression methods').left === 0) return refuse('ClientHello has no compression method');
  if (r.left === 0) return refuse('ClientHello has no extensions, so no SNI');
  const exts = r.block(2, 'extensions');
  if (r.left !== 0) return refuse('ClientHello has bytes after its extensions');
  const seen = new Set<number>();
  let host: string | undefined;
  while (exts.left > 0) {
    const type = exts.u16('extension type');
    const data = exts.block(2, `extension ${type}`);
    if (seen.has(type)) return refuse(`ClientHello repeats extension ${type}`);
    seen.add(type);
    if (type === EXT_SERVER_NAME) host = serverName(data);
  }
  return host === undefined ? refuse('ClientHello has no SNI') : { kind: 'host', host };
}

function serverName(data: Reader): string {
  const list = data.block(2, 'server name list');
  if (data.left !== 0) throw new Malformed('ClientHello: bytes after the server name list');
  let host: string | undefined;
  while (list.left > 0) {
    const type = list.u8('server name type');
    const name = list.block(2, 'server name');
    if (type !== NAME_TYPE_HOST) continue;
    if (host !== undefined) throw new Malformed('ClientHello: more than one SNI host name');
    const bytes = name.bytes(name.left, 'host name');
    // Printable ASCII only: a NUL or a control byte is an attack on whoever reads the name next.
    if (bytes.length === 0 || bytes.length > 255 || bytes.some((b) => b <= 0x20 || b >= 0x7f)) {
      throw new Malformed('ClientHello: the SNI host name is empty, too long or not printable ASCII');
    }
    host = bytes.toString('latin1');
  }
  if (host === undefined) throw new Malformed('ClientHello: the SNI extension holds no host name');
  return host;
}

const TOKEN_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const REQUEST_LINE_RE = /^([A-Z]{1,20}) (\S+) HTTP\/1\.[01]$/;
/** What may lead a request (a method); checked before the line is whole so junk fails fast. */
const METHOD_PREFIX_RE = /^[A-Z]{0,20}(?: |$)/;

/**
 * The Host of an HTTP/1.x request head (the authority without its port; an IPv6 literal without
 * brackets). Refuses: anything that does not start like a request line, bare-LF or folded
 * headers, whitespace before a colon, no Host or more than one, a Host that is not an authority,
 * and an absolute-form request target naming another host than Host (RFC 9112 §3.2).
 */
export function sniffHttp(buf: Buffer): Sniffed {
  const text = buf.toString('latin1');
  if (!METHOD_PREFIX_RE.test(text.slice(0, 21))) return refuse('not an HTTP/1.x request');
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return MORE;
  const [requestLine = '', ...headerLines] = text.slice(0, end).split('\r\n');
  const m = REQUEST_LINE_RE.exec(requestLine);
  if (!m) return refuse('the request line is not "METHOD target HTTP/1.x"');
  const hosts: string[] = [];
  for (const line of headerLines) {
    const colon = line.indexOf(':');
    const name = colon < 0 ? '' : line.slice(0, colon);
    if (!TOKEN_RE.test(name)) return refuse('a header line is malformed (bare LF, folding or no name)');
    if (/[\0\r\n]/.test(line)) return refuse('a header holds a NUL or a bare CR/LF');
    if (name.toLowerCase() === 'host') hosts.push(line.slice(colon + 1).trim());
  }
  if (hosts.length !== 1)
    return refuse(
      hosts.length === 0 ? 'the request has no Host header' : 'the request has more than one Host header',
    );
  const host = authorityHost(hosts[0] ?? '');
  if (host === undefined) return refuse('the Host header is not a host[:port]');
  const target = m[2] ?? '';
  const abs = /^https?:\/\/([^/?#]*)/i.exec(target);
  if (abs) {
    const targetHost = (abs[1] ?? '').includes('@') ? undefined : authorityHost(abs[1] ?? '');
    if (targetHost?.toLowerCase() !== host.toLowerCase())
      return refuse('the request target names another host than Host');
  }
  return { kind: 'host', host };
}

/** The host of `host[:port]` or `[v6][:port]`; undefined when the text is not that shape. */
function authorityHost(authority: string): string | undefined {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]\s]+))(?::([0-9]{1,5}))?$/.exec(authority);
  if (!m) return undefined;
  if (m[3] !== undefined && Number(m[3]) > 65535) return undefined;
  return m[1] ?? m[2];
}
