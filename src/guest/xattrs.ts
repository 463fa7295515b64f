/**
 * File metadata as envd keeps it: user-defined key/value pairs in `user.e2b.<key>` extended
 * attributes of the file (so they live on the inode and survive a rename). Node has no xattr API
 * without a native addon, so one long-lived Python helper (python3 is in every kiln image, like
 * the PTY helper) does the syscalls: JSON lines in, one JSON line out per request, in order.
 * It is started with the agent (main.ts), so it is already running in every template snapshot.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import type { Socket } from 'node:net';
import { createInterface } from 'node:readline';

export type Metadata = Record<string, string>;

/** envd's limits (packages/shared/pkg/filesystem/xattr.go). */
export const METADATA_PREFIX = 'user.e2b.';
const MAX_KEY = 255 - METADATA_PREFIX.length;
const MAX_TOTAL = 4096;

const HELPER = String.raw`
import os, sys, json, errno
P = 'user.e2b.'
def get(p):
    try:
        names = os.listxattr(p)
    except OSError:
        return None
    md = {}
    for n in names:
        if not n.startswith(P):
            continue
        try:
            k = n[len(P):]
            k.encode('utf-8')
            md[k] = os.getxattr(p, n).decode('utf-8')
        except (OSError, UnicodeError):
            continue
    return md or None
def put(p, md):
    for n in os.listxattr(p):
        if n.startswith(P) and n[len(P):] not in md:
            os.removexattr(p, n)
    for k, v in md.items():
        os.setxattr(p, P + k, v.encode())
for line in sys.stdin:
    r = json.loads(line)
    try:
        if r['op'] == 'get':
            out = {'ok': [get(p) for p in r['paths']]}
        else:
            put(r['path'], r['md'])
            out = {'ok': True}
    except OSError as e:
        out = {'err': e.strerror or str(e), 'code': errno.errorcode.get(e.errno, 'EIO')}
    sys.stdout.write(json.dumps(out) + '\n')
    sys.stdout.flush()
`;

interface Reply {
  ok?: unknown;
  err?: string;
  code?: string;
}

/** An error of the helper, with the errno name as `code` (like Node's fs errors). */
export class XattrError extends Error {
  readonly code: string;
  constructor(message: string, code: string) {
    super(message);
    this.code = code;
  }
}

let helper: { child: ChildProcessWithoutNullStreams; waiting: ((r: Reply) => void)[] } | undefined;

function start(): NonNullable<typeof helper> {
  const child = spawn('python3', ['-I', '-S', '-c', HELPER], { stdio: ['pipe', 'pipe', 'pipe'] });
  const h = { child, waiting: [] as ((r: Reply) => void)[] };
  createInterface({ input: child.stdout }).on('line', (line) => {
    h.waiting.shift()?.(JSON.parse(line) as Reply);
    if (h.waiting.length === 0) idle(h);
  });
  child.stderr.resume();
  const gone = (): void => {
    if (helper === h) helper = undefined;
    for (const w of h.waiting.splice(0)) w({ err: 'the xattr helper exited', code: 'EIO' });
  };
  child.on('exit', gone);
  child.on('error', gone);
  child.stdin.on('error', () => undefined);
  idle(h);
  return h;
}

/** An idle helper does not keep the agent's process (or a test's) alive. */
function idle(h: NonNullable<typeof helper>): void {
  h.child.unref();
  for (const s of [h.child.stdin, h.child.stdout, h.child.stderr]) (s as unknown as Socket).unref();
}

function ask(req: object): Promise<Reply> {
  const h = (helper ??= start());
  h.child.ref();
  (h.child.stdout as unknown as Socket).ref();
  return new Promise((resolve) => {
    h.waiting.push(resolve);
    h.child.stdin.write(JSON.stringify(req) + '\n');
  });
}

/** Starts the helper now (the agent's start-up), so the first request does not pay for it. */
export function startXattrHelper(): void {
  helper ??= start();
}

/** The metadata of each path (undefined: none, or unreadable). Symlinks are followed, like envd. */
export async function readMetadata(paths: string[]): Promise<(Metadata | undefined)[]> {
  if (paths.length === 0) return [];
  const r = await ask({ op: 'get', paths });
  if (!Array.isArray(r.ok)) return paths.map(() => undefined);
  return (r.ok as (Metadata | null)[]).map((m) => m ?? undefined);
}

/**
 * Replaces the file's metadata with `md` (keys absent from it are removed). Throws an XattrError
 * (code ENOTSUP / EOPNOTSUPP where the filesystem keeps no xattrs, ENOSPC, ...).
 */
export async function writeMetadata(path: string, md: Metadata): Promise<void> {
  const r = await ask({ op: 'put', path, md });
  if (r.ok !== true) throw new XattrError(`${path}: ${r.err ?? 'xattr helper failed'}`, r.code ?? 'EIO');
}

export const xattrUnsupported = (e: unknown): boolean =>
  e instanceof XattrError && (e.code === 'ENOTSUP' || e.code === 'EOPNOTSUPP');

const printable = (s: string): boolean => /^[\x20-\x7e]*$/.test(s);

/**
 * The `X-Metadata-<key>` headers of a request as envd reads them: prefix stripped, key lowercased
 * (Node already lowercases header names), the first value of a repeated header. Throws a message
 * naming what is wrong when envd's limits are broken.
 */
export function metadataFromHeaders(headers: NodeJS.Dict<string[]>): Metadata {
  const md: Metadata = {};
  let total = 0;
  for (const [name, values] of Object.entries(headers)) {
    if (!name.startsWith('x-metadata-') || !values?.length) continue;
    const key = name.slice('x-metadata-'.length);
    const value = values[0] ?? '';
    if (!key) continue;
    if (key.length > MAX_KEY) throw new Error(`invalid metadata: key "${key}" exceeds ${MAX_KEY} bytes`);
    if (!printable(key) || !printable(value))
      throw new Error(`invalid metadata: key "${key}" or its value is not printable US-ASCII`);
    md[key] = value;
    total += METADATA_PREFIX.length + key.length + value.length;
  }
  if (total > MAX_TOTAL)
    throw new Error(`invalid metadata: total metadata size ${total} exceeds ${MAX_TOTAL} bytes`);
  return md;
}
