import type { FSWatcher } from 'node:fs';
import { chown, lstat, mkdir, rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { randomUUID } from 'node:crypto';
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from '@connectrpc/connect';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { Channel } from './channel.ts';
import { accessRefusal, checkCreate, checkExisting, resolveUserPath } from './access.ts';
import { entryInfo, listEntries } from './entries.ts';
import {
  FileType,
  Filesystem,
  type FilesystemEventSchema,
  type WatchDirResponseSchema,
} from '../core/envd/filesystem/filesystem_pb.js';
import { keepaliveMs } from './keepalive.ts';
import { startWatch } from './watch-hub.ts';
import type { AgentState } from './state.ts';
import type { GuestUser } from './users.ts';

type FsEventInit = MessageInitShape<typeof FilesystemEventSchema>;

export interface FilesystemServiceDeps {
  state: AgentState;
  userOf: (ctx: HandlerContext) => Promise<GuestUser>;
}

function fsError(e: unknown, path: string): ConnectError {
  if (e instanceof ConnectError) return e;
  const refused = accessRefusal(e);
  if (refused)
    return new ConnectError(
      refused.message,
      refused.kind === 'denied' ? Code.PermissionDenied : Code.InvalidArgument,
    );
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

type Ctx = HandlerContext;

/** The request's user and the path it names, resolved against its home / the default workdir. */
async function pathFor(
  d: FilesystemServiceDeps,
  ctx: Ctx,
  p: string,
): Promise<{ user: GuestUser; path: string }> {
  const user = await d.userOf(ctx);
  try {
    return { user, path: resolveUserPath(p, user, d.state.defaultWorkdir) };
  } catch (e) {
    throw new ConnectError((e as Error).message, Code.InvalidArgument);
  }
}

/** A directory the user may read, as its real path. */
async function openDir(user: GuestUser, path: string): Promise<string> {
  try {
    const real = await checkExisting(user, path, 'read');
    if (!(await stat(real)).isDirectory())
      throw new ConnectError(`path '${path}' is not a directory`, Code.InvalidArgument);
    return real;
  } catch (e) {
    throw fsError(e, path);
  }
}

async function makeDir(user: GuestUser, path: string): Promise<void> {
  const st = await stat(path).catch(() => undefined);
  if (st?.isDirectory()) throw new ConnectError(`directory '${path}' already exists`, Code.AlreadyExists);
  if (st)
    throw new ConnectError(`path '${path}' already exists and is not a directory`, Code.InvalidArgument);
  await mkdirFor(user, await checkCreate(user, path));
}

async function move(user: GuestUser, src: string, dst: string): Promise<void> {
  try {
    await lstat(src);
    await checkCreate(user, src); // may modify the source's directory
    const realDst = await checkCreate(user, dst);
    await mkdirFor(user, dirname(realDst));
    await rename(src, realDst);
  } catch (e) {
    throw fsError(e, (e as NodeJS.ErrnoException).path === dst ? dst : src);
  }
}

async function remove(user: GuestUser, path: string): Promise<void> {
  if (!(await lstat(path).catch(() => undefined))) return;
  await checkCreate(user, path);
  await rm(path, { recursive: true, force: true });
}

/** Runs `fn` on a path, turning what it throws into a ConnectError about that path. */
async function onPath<T>(path: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw fsError(e, path);
  }
}

/** WatchDir: `start`, then the directory's events as they come, with keepalives, until the client goes. */
async function* watchStream(
  dir: string,
  o: { recursive: boolean; includeEntry: boolean },
  ctx: Ctx,
): AsyncGenerator<MessageInitShape<typeof WatchDirResponseSchema>> {
  const ch = new Channel<FsEventInit | 'keepalive'>();
  const timer = setInterval(() => {
    ch.push('keepalive');
  }, keepaliveMs(ctx));
  const w = startWatch(dir, o, (e) => {
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
}

/** Polling watchers (CreateWatcher / GetWatcherEvents / RemoveWatcher), by id. */
class Watchers {
  readonly #all = new Map<string, { w: FSWatcher; events: FsEventInit[] }>();

  create(dir: string, o: { recursive: boolean; includeEntry: boolean }): string {
    const id = randomUUID();
    const events: FsEventInit[] = [];
    const w = startWatch(dir, o, (e) => {
      if (events.length < 10_000) events.push(e);
    });
    this.#all.set(id, { w, events });
    return id;
  }

  /** The events since the last call. */
  take(id: string): FsEventInit[] {
    return this.#get(id).events.splice(0);
  }

  remove(id: string): void {
    this.#get(id).w.close();
    this.#all.delete(id);
  }

  #get(id: string): { w: FSWatcher; events: FsEventInit[] } {
    const w = this.#all.get(id);
    if (!w) throw new ConnectError(`watcher '${id}' not found`, Code.NotFound);
    return w;
  }
}

export function filesystemService(d: FilesystemServiceDeps): ServiceImpl<typeof Filesystem> {
  const watchers = new Watchers();
  const dirFor = async (ctx: Ctx, p: string): Promise<string> => {
    const { user, path } = await pathFor(d, ctx, p);
    return openDir(user, path);
  };
  return {
    async stat(req, ctx) {
      const { user, path } = await pathFor(d, ctx, req.path);
      return onPath(path, async () => {
        await checkExisting(user, dirname(path), 'search');
        return { entry: await entryInfo(path) };
      });
    },
    async makeDir(req, ctx) {
      const { user, path } = await pathFor(d, ctx, req.path);
      return onPath(path, async () => {
        await makeDir(user, path);
        return { entry: await entryInfo(path) };
      });
    },
    async move(req, ctx) {
      const { user, path: src } = await pathFor(d, ctx, req.source);
      const { path: dst } = await pathFor(d, ctx, req.destination);
      await move(user, src, dst);
      return { entry: await onPath(dst, () => entryInfo(dst)) };
    },
    async listDir(req, ctx) {
      const { user, path } = await pathFor(d, ctx, req.path);
      const real = await openDir(user, path);
      return { entries: await listEntries(real, path, Math.max(1, req.depth)) };
    },
    async remove(req, ctx) {
      const { user, path } = await pathFor(d, ctx, req.path);
      await onPath(path, () => remove(user, path));
      return {};
    },
    async *watchDir(req, ctx) {
      yield* watchStream(await dirFor(ctx, req.path), req, ctx);
    },
    async createWatcher(req, ctx) {
      return { watcherId: watchers.create(await dirFor(ctx, req.path), req) };
    },
    getWatcherEvents: (req) => ({ events: watchers.take(req.watcherId) }),
    removeWatcher(req) {
      watchers.remove(req.watcherId);
      return {};
    },
  };
}

export { FileType };
