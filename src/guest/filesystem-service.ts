import { watch, type FSWatcher } from 'node:fs';
import { chown, lstat, mkdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from '@connectrpc/connect';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { Channel } from './channel.ts';
import {
  AccessDeniedError,
  NotADirectoryError,
  checkCreate,
  checkExisting,
  resolveUserPath,
} from './access.ts';
import { entryInfo, listEntries } from './entries.ts';
import {
  EventType,
  FileType,
  Filesystem,
  type FilesystemEventSchema,
} from '../core/envd/filesystem/filesystem_pb.js';
import type { AgentState } from './state.ts';
import type { GuestUser } from './users.ts';

type FsEventInit = MessageInitShape<typeof FilesystemEventSchema>;

export interface FilesystemServiceDeps {
  state: AgentState;
  userOf: (ctx: HandlerContext) => Promise<GuestUser>;
}

const DEFAULT_KEEPALIVE_S = 90;

function fsError(e: unknown, path: string): ConnectError {
  if (e instanceof ConnectError) return e;
  if (e instanceof AccessDeniedError) return new ConnectError(e.message, Code.PermissionDenied);
  if (e instanceof NotADirectoryError) return new ConnectError(e.message, Code.InvalidArgument);
  if (e instanceof TypeError) return new ConnectError(e.message, Code.InvalidArgument);
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return new ConnectError(`path '${path}' does not exist`, Code.NotFound);
  if (code === 'ENOTDIR')
    return new ConnectError(`path '${path}': a parent is not a directory`, Code.InvalidArgument);
  if (code === 'EACCES' || code === 'EPERM')
    return new ConnectError(`permission denied: ${path}`, Code.PermissionDenied);
  if (code === 'ENOSPC') return new ConnectError(`no space left on device: ${path}`, Code.ResourceExhausted);
  return new ConnectError(`${path}: ${(e as Error).message}`, Code.Internal);
}

/** mkdir -p, chowning every directory it creates to the user. */
export async function mkdirFor(user: GuestUser, dir: string): Promise<void> {
  const missing: string[] = [];
  let d = dir;
  while (!(await stat(d).catch(() => undefined))) {
    missing.push(d);
    const up = dirname(d);
    if (up === d) break;
    d = up;
  }
  await mkdir(dir, { recursive: true });
  for (const m of missing.reverse()) await chown(m, user.uid, user.gid);
}

/** One fs.watch over a directory, turned into envd FilesystemEvents. */
function startWatch(
  dir: string,
  recursive: boolean,
  includeEntry: boolean,
  push: (e: FsEventInit) => void,
): FSWatcher {
  const w = watch(dir, { recursive, persistent: false });
  w.on('change', (kind, filename) => {
    const name = String(filename);
    const full = join(dir, name);
    void lstat(full).then(
      async () => {
        // 'rename' of an existing path is a create (or the new name of a move).
        const type = kind === 'change' ? EventType.WRITE : EventType.CREATE;
        const entry = includeEntry ? await entryInfo(full).catch(() => undefined) : undefined;
        push({ name, type, ...(entry ? { entry } : {}) });
      },
      () => {
        push({ name, type: kind === 'rename' ? EventType.REMOVE : EventType.WRITE });
      },
    );
  });
  w.on('error', () => undefined);
  return w;
}

export function filesystemService(d: FilesystemServiceDeps): ServiceImpl<typeof Filesystem> {
  const pathFor = async (ctx: HandlerContext, p: string): Promise<{ user: GuestUser; path: string }> => {
    const user = await d.userOf(ctx);
    try {
      return { user, path: resolveUserPath(p, user, d.state.defaultWorkdir) };
    } catch (e) {
      throw new ConnectError((e as Error).message, Code.InvalidArgument);
    }
  };
  const watchers = new Map<string, { w: FSWatcher; events: FsEventInit[] }>();

  const openDir = async (ctx: HandlerContext, p: string): Promise<string> => {
    const { user, path } = await pathFor(ctx, p);
    try {
      const real = await checkExisting(user, path, 'read');
      if (!(await stat(real)).isDirectory())
        throw new ConnectError(`path '${path}' is not a directory`, Code.InvalidArgument);
      return real;
    } catch (e) {
      throw fsError(e, path);
    }
  };

  return {
    async stat(req, ctx) {
      const { user, path } = await pathFor(ctx, req.path);
      try {
        await checkExisting(user, dirname(path), 'search');
        return { entry: await entryInfo(path) };
      } catch (e) {
        throw fsError(e, path);
      }
    },

    async makeDir(req, ctx) {
      const { user, path } = await pathFor(ctx, req.path);
      try {
        const st = await stat(path).catch(() => undefined);
        if (st?.isDirectory())
          throw new ConnectError(`directory '${path}' already exists`, Code.AlreadyExists);
        if (st)
          throw new ConnectError(
            `path '${path}' already exists and is not a directory`,
            Code.InvalidArgument,
          );
        const real = await checkCreate(user, path);
        await mkdirFor(user, real);
        return { entry: await entryInfo(path) };
      } catch (e) {
        throw fsError(e, path);
      }
    },

    async move(req, ctx) {
      const { user, path: src } = await pathFor(ctx, req.source);
      const { path: dst } = await pathFor(ctx, req.destination);
      try {
        await lstat(src);
        await checkCreate(user, src); // may modify the source's directory
        const realDst = await checkCreate(user, dst);
        await mkdirFor(user, dirname(realDst));
        await rename(src, realDst);
        return { entry: await entryInfo(dst) };
      } catch (e) {
        throw fsError(e, (e as NodeJS.ErrnoException).path === dst ? dst : src);
      }
    },

    async listDir(req, ctx) {
      const { path } = await pathFor(ctx, req.path);
      const real = await openDir(ctx, req.path);
      return { entries: await listEntries(real, path, Math.max(1, req.depth)) };
    },

    async remove(req, ctx) {
      const { user, path } = await pathFor(ctx, req.path);
      try {
        if (!(await lstat(path).catch(() => undefined))) return {};
        await checkCreate(user, path);
        await rm(path, { recursive: true, force: true });
        return {};
      } catch (e) {
        throw fsError(e, path);
      }
    },

    async *watchDir(req, ctx) {
      const dir = await openDir(ctx, req.path);
      const ch = new Channel<FsEventInit | 'keepalive'>();
      const s = Number(ctx.requestHeader.get('keepalive-ping-interval'));
      const interval = (Number.isFinite(s) && s > 0 ? s : DEFAULT_KEEPALIVE_S) * 1000;
      const timer = setInterval(() => {
        ch.push('keepalive');
      }, interval);
      const w = startWatch(dir, req.recursive, req.includeEntry, (e) => {
        ch.push(e);
      });
      const onAbort = (): void => {
        ch.close();
      };
      ctx.signal.addEventListener('abort', onAbort);
      try {
        yield { event: { case: 'start', value: {} } };
        for await (const e of ch) {
          yield e === 'keepalive'
            ? { event: { case: 'keepalive', value: {} } }
            : { event: { case: 'filesystem', value: e } };
        }
      } finally {
        clearInterval(timer);
        w.close();
        ctx.signal.removeEventListener('abort', onAbort);
      }
    },

    async createWatcher(req, ctx) {
      const dir = await openDir(ctx, req.path);
      const id = randomUUID();
      const events: FsEventInit[] = [];
      const w = startWatch(dir, req.recursive, req.includeEntry, (e) => {
        if (events.length < 10_000) events.push(e);
      });
      watchers.set(id, { w, events });
      return { watcherId: id };
    },

    getWatcherEvents(req) {
      const w = watchers.get(req.watcherId);
      if (!w) throw new ConnectError(`watcher '${req.watcherId}' not found`, Code.NotFound);
      return { events: w.events.splice(0) };
    },

    removeWatcher(req) {
      const w = watchers.get(req.watcherId);
      if (!w) throw new ConnectError(`watcher '${req.watcherId}' not found`, Code.NotFound);
      w.w.close();
      watchers.delete(req.watcherId);
      return {};
    },
  };
}

export { FileType };
