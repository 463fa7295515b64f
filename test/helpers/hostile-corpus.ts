/**
 * Hostile HTTP requests for kilnd's three listeners, as raw bytes: a fixed corpus (every input
 * that crashed kilnd in issue 10, and the classic malformed request lines, escapes, headers and
 * bodies) and a seeded generator that combines and mutates such pieces (hostile-generator.ts).
 * Deterministic for a seed, so a failure can be replayed.
 *
 * The generator never asks for real work: no valid template build (`POST /v1/templates` always
 * gets a bad name or bad JSON) and no E2B create of `base` (which builds the base template); other
 * routes only see ids that do not exist.
 */
import { pool, rawRequest, type RawOutcome, type RawTarget } from './raw-http.ts';

export type Listener = 'native' | 'e2bApi' | 'envdProxy';

export interface HostileRequest {
  listener: Listener;
  bytes: Buffer;
  /** HEAD: the answer has no body. */
  head: boolean;
  /** Where it came from (corpus entry or seed/index), for failure messages. */
  label: string;
}

/** The fixed corpus for one listener: the crash inputs of issue 10 first. */
export function corpus(listener: Listener, apiKey: string, sandboxId: string | undefined): HostileRequest[] {
  const auth =
    listener === 'e2bApi'
      ? `X-API-KEY: ${apiKey}\r\n`
      : listener === 'envdProxy'
        ? `E2b-Sandbox-Id: ${sandboxId ?? 'sbx-nope'}\r\n`
        : '';
  const raw: [string, string][] = [
    // issue 10, item 1: each of these crashed kilnd.
    ['crash: //[/ unauthenticated', 'GET //[/ HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['crash: //[/', `GET //[/ HTTP/1.1\r\nHost: x\r\n${auth}\r\n`],
    ['crash: /sandboxes/%ZZ', `GET /sandboxes/%ZZ HTTP/1.1\r\nHost: x\r\n${auth}\r\n`],
    ['crash: /v1/sandboxes/%E0%A4%A', `GET /v1/sandboxes/%E0%A4%A HTTP/1.1\r\nHost: x\r\n${auth}\r\n`],
    ['crash: DELETE /sandboxes/%ZZ', `DELETE /sandboxes/%ZZ HTTP/1.1\r\nHost: x\r\n${auth}\r\n`],
    [
      'crash: /v1/sandboxes/%ZZ/exec',
      `POST /v1/sandboxes/%ZZ/exec HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: 2\r\n\r\n{}`,
    ],
    ['crash: //[/ absolute', `GET http://[/ HTTP/1.1\r\nHost: x\r\n${auth}\r\n`],
    // request lines
    ['empty line', '\r\n\r\n'],
    ['garbage', '\u0000\u0001\u0002\u00ff\r\n\r\n'],
    ['no version', 'GET /\r\n\r\n'],
    ['HTTP/0.9', 'GET /\r\n'],
    ['bad version', 'GET / HTTP/3.0\r\nHost: x\r\n\r\n'],
    ['bad method', 'G@T / HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['CONNECT', 'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['OPTIONS *', 'OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['space in target', 'GET /a b HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['tab in target', 'GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['utf-8 in target', 'GET /\u00c3\u00a9 HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['long target', `GET /${'a'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`],
    // headers
    ['no Host', 'GET / HTTP/1.1\r\n\r\n'],
    ['two Hosts', 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n'],
    ['header without colon', `GET / HTTP/1.1\r\nHost: x\r\n${auth}Nope\r\n\r\n`],
    ['space before colon', `GET / HTTP/1.1\r\nHost : x\r\n\r\n`],
    ['obs-fold', `GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n`],
    ['NUL in header', `GET / HTTP/1.1\r\nHost: x\r\nX: a\u0000b\r\n\r\n`],
    ['huge header', `GET / HTTP/1.1\r\nHost: x\r\nX: ${'a'.repeat(20_000)}\r\n\r\n`],
    ['many headers', `GET / HTTP/1.1\r\nHost: x\r\n${'X-A: 1\r\n'.repeat(2000)}\r\n`],
    ['bare LF', `GET / HTTP/1.1\nHost: x\n${auth.replace(/\r\n/g, '\n')}\n`],
    ['bare CR', 'GET / HTTP/1.1\rHost: x\r\r'],
    ['op id junk', `GET / HTTP/1.1\r\nHost: x\r\nX-Kiln-Op-Id: ../../x y\r\n\r\n`],
    ['upgrade', `GET / HTTP/1.1\r\nHost: x\r\n${auth}Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n`],
    [
      'h2c upgrade',
      `GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n`,
    ],
    ['h2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'],
    ['tls hello', '\u0016\u0003\u0001\u0002\u0000\u0001\u0000\u0001\u00fc\u0003\u0003'],
    // bodies and framing
    [
      'CL and TE',
      `POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    ],
    [
      'two CLs',
      `POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}`,
    ],
    ['negative CL', `POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: -1\r\n\r\n`],
    ['huge CL', `POST /v2/sandboxes HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: 99999999999\r\n\r\n{`],
    [
      'bad chunk',
      `POST /v2/sandboxes HTTP/1.1\r\nHost: x\r\n${auth}Transfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n`,
    ],
    [
      'chunk too long',
      `POST /v2/sandboxes HTTP/1.1\r\nHost: x\r\n${auth}Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\n`,
    ],
    ['body on GET', `GET /v1/health HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: 5\r\n\r\nhello`],
    [
      'deep JSON',
      (() => {
        const b = '['.repeat(100_000) + ']'.repeat(100_000);
        return `POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: ${b.length}\r\n\r\n${b}`;
      })(),
    ],
    [
      'proto pollution',
      (() => {
        const b = '{"__proto__":{"template":"base"},"constructor":{"prototype":{"x":1}}}';
        return `POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: ${b.length}\r\n\r\n${b}`;
      })(),
    ],
    [
      'exec junk envs',
      (() => {
        const b = '{"cmd":"true","envs":[1,2],"timeoutMs":-1}';
        return `POST /v1/sandboxes/sbx-nope/exec HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: ${b.length}\r\n\r\n${b}`;
      })(),
    ],
    [
      'bad template name',
      (() => {
        const b = '{"name":"Bad/Name","templateID":"../../x"}';
        return `POST /v1/templates HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: ${b.length}\r\n\r\n${b}`;
      })(),
    ],
    [
      'E2B create bad template',
      (() => {
        const b = '{"templateID":"../../etc"}';
        return `POST /v2/sandboxes HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: ${b.length}\r\n\r\n${b}`;
      })(),
    ],
    [
      'import junk',
      `POST /v1/snapshots/import HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: 1024\r\n\r\n${'\u0000'.repeat(1024)}`,
    ],
    [
      'pipelined good then bad',
      `GET /v1/health HTTP/1.1\r\nHost: x\r\n${auth}\r\nGET //[/ HTTP/1.1\r\nHost: x\r\n\r\n`,
    ],
    [
      'pipelined bad then good',
      `GET //[/ HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n`,
    ],
    [
      'files signature junk',
      `GET /files?path=%ZZ&signature=v1_%E0%A4%A&signature_expiration=1e999 HTTP/1.1\r\nHost: x\r\n\r\n`,
    ],
    ['proxy port junk', `GET /health HTTP/1.1\r\nHost: x\r\n${auth}E2b-Sandbox-Port: %ZZ\r\n\r\n`],
  ];
  return raw.map(([label, s]) => ({
    listener,
    bytes: Buffer.from(s, 'latin1'),
    head: false,
    label: `corpus ${listener}: ${label}`,
  }));
}

/**
 * The one 5xx a listener may answer: the envd proxy's 502 for a sandbox it does not know or that
 * does not run (E2B's proxy does the same; the SDK reads it as "not running"), or for a
 * published port nothing in the guest listens on (E2B's "port is not open"). Everything else in 5xx is a kiln bug.
 */
export function legitimate5xx(listener: Listener, status: number, body: string, head: boolean): boolean {
  if (listener !== 'envdProxy' || status !== 502) return false;
  // An answer to HEAD has no body to tell which 502 it is.
  if (head) return body === '';
  let b: unknown;
  try {
    b = JSON.parse(body);
  } catch {
    return false;
  }
  const { code, message } = b as { code?: unknown; message?: unknown };
  return (
    code === 502 &&
    typeof message === 'string' &&
    /^(The sandbox .* was not found or is not running|The sandbox is running but port is not open)/.test(
      message,
    )
  );
}

/** Outcomes by listener: `<status>` for answers, `closed`/`reset`/`timeout` otherwise. */
type Tally = Record<Listener, Record<string, number>>;

export async function fire(
  reqs: HostileRequest[],
  targets: Record<Listener, RawTarget>,
  concurrency: number,
): Promise<{ tally: Tally; bad: string[] }> {
  const tally: Tally = { native: {}, e2bApi: {}, envdProxy: {} };
  const bad: string[] = [];
  await pool(reqs, concurrency, async (q) => {
    const o: RawOutcome = await rawRequest(targets[q.listener], q.bytes, { head: q.head, timeoutMs: 10_000 });
    const key = o.kind === 'response' ? String(o.res.status) : o.kind;
    const t = tally[q.listener];
    t[key] = (t[key] ?? 0) + 1;
    if (
      o.kind === 'response' &&
      o.res.status >= 500 &&
      !legitimate5xx(q.listener, o.res.status, o.res.body, q.head)
    )
      bad.push(
        `${q.label}: ${o.res.status} ${o.res.body.slice(0, 300)}\n  request: ${JSON.stringify(q.bytes.subarray(0, 300).toString('latin1'))}`,
      );
    if (o.kind === 'timeout')
      bad.push(
        `${q.label}: no answer and no close within 10 s\n  request: ${JSON.stringify(q.bytes.subarray(0, 300).toString('latin1'))}`,
      );
  });
  return { tally, bad };
}
