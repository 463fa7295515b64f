/**
 * The seeded half of the hostile corpus (hostile-corpus.ts): a generator that combines and
 * mutates routes, targets, methods, versions, headers and bodies into raw requests for kilnd's
 * listeners. Deterministic for a seed, so a failure can be replayed; it never asks for real work
 * (see hostile-corpus.ts).
 */
import type { HostileRequest, Listener } from './hostile-corpus.ts';

/** mulberry32: a small, fast, seeded PRNG. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Routes of each listener, `:id` to be filled in. */
const ROUTES: Record<Listener, string[]> = {
  native: [
    '/v1/health',
    '/v1/templates',
    '/v1/sandboxes',
    '/v1/sandboxes/:id',
    '/v1/sandboxes/:id/timeout',
    '/v1/sandboxes/:id/stats',
    '/v1/sandboxes/:id/logs',
    '/v1/sandboxes/:id/exec',
    '/v1/sandboxes/:id/snapshots',
    '/v1/sandboxes/:id/pause',
    '/v1/sandboxes/:id/resume',
    '/v1/sandboxes/:id/fork',
    '/v1/snapshots',
    '/v1/snapshots/:id',
    '/v1/snapshots/:id/restore',
    '/v1/snapshots/:id/export',
    '/v1/snapshots/import',
    '/v1/api-keys',
    '/v1/api-keys/:id',
    '/v1/e2b/env',
  ],
  e2bApi: [
    '/v2/sandboxes',
    '/v2/sandboxes/:id/connect',
    '/sandboxes',
    '/sandboxes/:id',
    '/sandboxes/:id/timeout',
    '/sandboxes/:id/pause',
    '/sandboxes/:id/snapshots',
    '/snapshots',
    '/templates/:id',
    '/sandboxes/:id/fork',
    '/sandboxes/:id/metrics',
  ],
  envdProxy: [
    '/health',
    '/files',
    '/envs',
    '/metrics',
    '/init',
    '/process.Process/Start',
    '/process.Process/List',
    '/process.Process/Connect',
    '/process.Process/SendInput',
    '/process.Process/StreamInput',
    '/filesystem.Filesystem/Stat',
    '/filesystem.Filesystem/ListDir',
    '/filesystem.Filesystem/MakeDir',
    '/filesystem.Filesystem/WatchDir',
  ],
};

/** Path segments that break decoders, routers and file names. */
const SEGMENTS = [
  '%ZZ',
  '%E0%A4%A',
  '%',
  '%%',
  '%0',
  '%00',
  '%C3',
  '%C3%28',
  '%ED%A0%80',
  '%F4%90%80%80',
  '%2F',
  '%2e%2e',
  '..',
  '.',
  '',
  'sbx-nope',
  'sbx-0000000000000000',
  'snap-nope',
  'tpl-nope',
  'key-nope',
  'Bad.Name',
  'a..b',
  'a'.repeat(300),
  '[',
  ']',
  '[::1]',
  '@',
  ':',
  '~',
  '\\',
  '%5C',
  '%25ZZ',
  'é',
  '😀',
  '%F0%9F%98%80',
  '$(id)',
  '`id`',
  "'",
  '"',
  '<x>',
  '{}',
  '|',
  '^',
  '%0D%0ASet-Cookie:%20x',
];

/** Whole request targets that are wrong as such. */
const TARGETS = [
  '//[/',
  '//',
  '///',
  '//evil.example/v1/health',
  '/\\/evil',
  '*',
  '[',
  'http://[::1',
  'http://x/v1/health',
  'https://x:99999/',
  'ftp://x/',
  'http:/x',
  'http://x@y/',
  '/?%ZZ=%ZZ',
  '/v1/sandboxes?limit=abc&limit=-1&state=zombie&cursor=%ZZ',
  '/v1/sandboxes?limit=1e400&metadata.%ZZ=%E0%A4%A',
  '/v1/sandboxes/x/logs?limit=NaN&cursor=-1',
  '/v1/sandboxes/x/logs?limit=99999999999999999999',
  '/v2/sandboxes?limit=0&nextToken=%ZZ&state=running,zombie&metadata=%ZZ',
  '/v2/sandboxes?metadata=a%3D%25ZZ&limit=1.5',
  '/snapshots?limit=-5&nextToken=-1&sandboxID=%00',
  '/files?path=%ZZ&signature=v1_x&signature_expiration=abc',
  '/files?signature=%E0%A4%A&signature_expiration=1e999&username=%00',
  '/' + 'x'.repeat(8000),
  '/v1/' + '../'.repeat(50) + 'etc/passwd',
  '/%2e%2e/%2e%2e/etc/passwd',
  '/#fragment',
  '/?' + '&a'.repeat(2000),
];

const METHODS = ['GET', 'POST', 'DELETE', 'PUT', 'PATCH', 'HEAD', 'OPTIONS'];
const BAD_METHODS = ['G@T', 'get', 'GETT', 'CONNECT', 'TRACE', 'M-SEARCH', 'PURGE', 'X'.repeat(40), ''];
const VERSIONS = [
  'HTTP/1.1',
  'HTTP/1.1',
  'HTTP/1.1',
  'HTTP/1.0',
  'HTTP/2.0',
  'HTTP/1.2',
  'HTTP/9',
  'HTTP/1.x',
  'http/1.1',
  '',
];

/** JSON values of the wrong kind for any field. */
const JUNK_VALUES: unknown[] = [
  'x',
  '',
  -1,
  0,
  1.5,
  1e308,
  -1e308,
  true,
  null,
  [],
  [1, 2],
  {},
  { a: 1 },
  { a: { b: [null] } },
  'a'.repeat(5000),
  '../../etc/shadow',
  'Bad/Name',
  'UPPER',
  '\u0000',
  '\ud800',
  Number.MAX_SAFE_INTEGER + 2,
];

/** Body field names kiln reads somewhere (so junk reaches the checks). */
const FIELDS = [
  'template',
  'templateID',
  'name',
  'memoryMiB',
  'vcpus',
  'timeoutS',
  'timeout',
  'timeoutMs',
  'cmd',
  'user',
  'cwd',
  'envs',
  'envVars',
  'metadata',
  'autoPause',
  'autoResume',
  'allowInternet',
  'allow_internet_access',
  'count',
  'network',
  'volumeMounts',
  '__proto__',
  'constructor',
];

const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;

function body(r: () => number): string {
  switch (Math.floor(r() * 8)) {
    case 0:
      return '';
    case 1:
      return '{"template": ';
    case 2:
      return pick(r, [
        '[1]',
        'null',
        '"str"',
        '42',
        '{}',
        '{"a":1}{"b":2}',
        '\u0000\u0001\u00ff',
        '{"__proto__":{"x":1}}',
      ]);
    case 3:
      return '['.repeat(5000) + ']'.repeat(5000);
    case 4: {
      // Any bytes.
      const n = Math.floor(r() * 300);
      return Buffer.from(Array.from({ length: n }, () => Math.floor(r() * 256))).toString('latin1');
    }
    default: {
      const o: Record<string, unknown> = {};
      const n = 1 + Math.floor(r() * 4);
      for (let i = 0; i < n; i++) o[pick(r, FIELDS)] = pick(r, JUNK_VALUES);
      return JSON.stringify(o);
    }
  }
}

/** A body that can never start real work on `path` (see the module comment). */
function safeBody(r: () => number, path: string, method: string): string {
  const b = body(r);
  if (method !== 'POST') return b;
  if (path === '/v1/templates') {
    // Always refused before the build: a bad name, or JSON that does not parse.
    return r() < 0.5
      ? JSON.stringify({ name: pick(r, ['Bad/Name', 'UPPER', '', '..', 'a'.repeat(80)]) })
      : '{"name":';
  }
  if (path === '/v2/sandboxes' || path === '/sandboxes') {
    try {
      const v = JSON.parse(b) as unknown;
      if (
        v &&
        typeof v === 'object' &&
        !Array.isArray(v) &&
        (v as Record<string, unknown>)['templateID'] === 'base'
      )
        return '{}';
    } catch {
      // not JSON: refused as such
    }
  }
  return b;
}

function headersFor(
  r: () => number,
  listener: Listener,
  apiKey: string,
  sandboxId: string | undefined,
  accessToken: string | undefined,
): string[] {
  const h: string[] = [];
  if (r() < 0.93)
    h.push(
      pick(r, ['Host: x', 'Host: 127.0.0.1:1', 'Host:', 'Host: ' + 'h'.repeat(300), 'host: a\r\nHost: b']),
    );
  if (listener === 'e2bApi') {
    const k = r();
    if (k < 0.5) h.push(`X-API-KEY: ${apiKey}`);
    else if (k < 0.6) h.push(`X-API-KEY: e2b_${'0'.repeat(40)}`);
    else if (k < 0.65) h.push(`X-API-KEY: ${apiKey}\r\nX-API-KEY: other`);
    else if (k < 0.7) h.push('X-API-KEY:');
  }
  if (listener === 'envdProxy') {
    const k = r();
    if (k < 0.45) h.push(`E2b-Sandbox-Id: ${sandboxId ?? 'sbx-nope'}`);
    else if (k < 0.65) h.push(`E2b-Sandbox-Id: ${pick(r, SEGMENTS)}`);
    else if (k < 0.7) h.push('E2b-Sandbox-Id: a\r\nE2b-Sandbox-Id: b');
    if (r() < 0.2) h.push(`E2b-Sandbox-Port: ${pick(r, ['49983', '8080', '-1', 'x', '', '49983, 49983'])}`);
    // The sandbox's real token on some, so junk also gets past the agent's check.
    const tok = r();
    if (accessToken && tok < 0.35) h.push(`X-Access-Token: ${accessToken}`);
    else if (tok < 0.5) h.push(`X-Access-Token: ${pick(r, ['', 'nope', 'a'.repeat(500)])}`);
    if (r() < 0.2)
      h.push(
        `Content-Type: ${pick(r, ['application/json', 'application/connect+json', 'application/proto', 'multipart/form-data; boundary=x', 'x'])}`,
      );
    if (r() < 0.1) h.push(`Connect-Timeout-Ms: ${pick(r, ['1', '-1', 'x', '99999999999999'])}`);
  }
  if (r() < 0.2)
    h.push(
      `Content-Type: ${pick(r, ['application/json', 'text/plain', 'application/json; charset=latin1', ''])}`,
    );
  if (r() < 0.1) h.push(`X-Kiln-Op-Id: ${pick(r, ['op-1', '', 'x'.repeat(100), '../../x', 'a b'])}`);
  if (r() < 0.05) h.push('Expect: 100-continue');
  if (r() < 0.03) h.push('Expect: something-else');
  if (r() < 0.05) h.push('Connection: Upgrade\r\nUpgrade: websocket');
  if (r() < 0.05)
    h.push(
      pick(r, [
        'NoColonHere',
        'Bad Name: x',
        ' Folded: x',
        'X-Folded: a\r\n  b',
        'X-Nul: a\u0000b',
        'X-Bin: \u00ff\u00fe',
        ': empty-name',
      ]),
    );
  if (r() < 0.03) h.push(`X-Huge: ${'a'.repeat(17_000)}`);
  if (r() < 0.05) h.push('Connection: close');
  if (r() < 0.03) h.push('Accept-Encoding: gzip\r\nContent-Encoding: gzip');
  return h;
}

/** One generated request: a route (or a broken target), a method, headers, a body, maybe mutated bytes. */
export function generate(
  r: () => number,
  listener: Listener,
  apiKey: string,
  sandboxId: string | undefined,
  label: string,
  accessToken?: string,
): HostileRequest {
  let target: string;
  let path: string;
  if (r() < 0.15) {
    target = pick(r, TARGETS);
    path = target;
  } else {
    path = pick(r, ROUTES[listener]).replace(/:id/g, () => {
      const k = r();
      if (listener === 'envdProxy' || k < 0.4) return pick(r, SEGMENTS);
      return k < 0.7
        ? pick(r, ['sbx-nope', 'snap-nope', 'nope', sandboxId ?? 'sbx-nope'])
        : pick(r, SEGMENTS);
    });
    target = path;
    if (r() < 0.2)
      target +=
        '?' + pick(r, ['limit=-1', 'limit=abc', 'state=%ZZ', 'a=%E0%A4%A', 'cursor=x', 'path=%00', '%']);
  }
  const method = r() < 0.95 ? pick(r, METHODS) : pick(r, BAD_METHODS);
  const version = r() < 0.92 ? 'HTTP/1.1' : pick(r, VERSIONS);
  const headers = headersFor(r, listener, apiKey, sandboxId, accessToken);
  const b =
    method === 'GET' || method === 'HEAD'
      ? r() < 0.1
        ? body(r)
        : ''
      : safeBody(r, path.split('?')[0] ?? '', method);
  const bodyBytes = Buffer.from(b, 'latin1');
  // Framing: usually right; sometimes chunked, missing, wrong or contradictory.
  let framing: string[];
  let payload: Buffer = bodyBytes;
  const f = r();
  if (f < 0.75)
    framing = bodyBytes.length || method === 'POST' ? [`Content-Length: ${bodyBytes.length}`] : [];
  else if (f < 0.85) {
    framing = ['Transfer-Encoding: chunked'];
    payload = Buffer.concat([
      Buffer.from(`${bodyBytes.length.toString(16)}\r\n`),
      bodyBytes,
      Buffer.from(r() < 0.8 ? '\r\n0\r\n\r\n' : '\r\nZZ\r\n'),
    ]);
  } else
    framing = [
      pick(r, [
        `Content-Length: ${bodyBytes.length + 10}`,
        `Content-Length: ${Math.max(0, bodyBytes.length - 1)}`,
        'Content-Length: -1',
        'Content-Length: 1x',
        'Content-Length: 99999999999999999999',
        `Content-Length: ${bodyBytes.length}\r\nContent-Length: ${bodyBytes.length + 1}`,
        `Content-Length: ${bodyBytes.length}\r\nTransfer-Encoding: chunked`,
        'Transfer-Encoding: gzip, chunked',
        'Transfer-Encoding: identity',
      ]),
    ];
  const lineEnd = r() < 0.97 ? '\r\n' : pick(r, ['\n', '\r', '\r\r\n']);
  const head =
    [`${method} ${target} ${version}`.trimEnd(), ...headers, ...framing].join(lineEnd) + lineEnd + lineEnd;
  let bytes = Buffer.concat([Buffer.from(head, 'latin1'), payload]);
  // Byte-level mutation of a few requests: flips, cuts, insertions.
  if (r() < 0.1) {
    const copy = Buffer.from(bytes);
    const n = 1 + Math.floor(r() * 4);
    for (let i = 0; i < n; i++) copy[Math.floor(r() * copy.length)] = Math.floor(r() * 256);
    bytes = r() < 0.3 ? copy.subarray(0, Math.floor(r() * copy.length)) : copy;
  }
  // Pipelining: a second request behind the first.
  if (r() < 0.05)
    bytes = Buffer.concat([bytes, Buffer.from(`GET ${pick(r, TARGETS)} HTTP/1.1\r\nHost: x\r\n\r\n`)]);
  return { listener, bytes, head: method === 'HEAD', label };
}
