/**
 * The agent's directory watchers (WatchDir streams and polling watchers), so that an upload can
 * tell them what it did. kiln writes an upload into a hidden temporary file beside the target and
 * renames it over the target when complete (a failed upload leaves no partial file); inotify shows
 * that as create/write/rename of the temporary file plus a rename onto the target. envd writes in
 * place, so its watchers see `create` (new file) and `write` of the target. The watchers here drop
 * events of kiln's temporary files and the rename onto an upload's target, and the upload itself
 * reports `create` (when the file is new) and `write` to every watcher that covers the target.
 */
import { watch, type FSWatcher } from 'node:fs';
import { lstat } from 'node:fs/promises';
import { basename, join, relative, sep } from 'node:path';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { EventType, type FilesystemEventSchema } from '../core/envd/filesystem/filesystem_pb.js';
import { entryInfo } from './entries.ts';

type FsEventInit = MessageInitShape<typeof FilesystemEventSchema>;

/** The name of an upload's temporary file beside `target`. */
export const uploadTempName = (target: string, suffix: string): string =>
  `.${basename(target)}.kiln-upload-${suffix}`;
const TEMP = /(^|\/)\.[^/]*\.kiln-upload-[0-9a-f]{12}$/;

/** How long an expected rename event is waited for before it no longer hides a real one. */
const EXPECT_MS = 10_000;

interface Watcher {
  dir: string;
  recursive: boolean;
  includeEntry: boolean;
  push: (e: FsEventInit) => void;
  /** Renames uploads announced, by name relative to `dir`: the file's inode, and until when. */
  expected: Map<string, { ino: number; until: number }[]>;
}

const watchers = new Set<Watcher>();

/** The name of `path` relative to the watcher's directory, if the watcher covers it. */
function nameIn(w: Watcher, path: string): string | undefined {
  const rel = relative(w.dir, path);
  if (!rel || rel.startsWith('..') || rel.startsWith(sep)) return undefined;
  if (!w.recursive && rel.includes(sep)) return undefined;
  return rel;
}

/**
 * Takes one announced rename of `name` if the file there now is an upload's (by inode: a rename
 * event that never came cannot hide a later, unrelated one) and the announcement is recent.
 */
function takeExpected(w: Watcher, name: string, ino: number): boolean {
  const list = w.expected.get(name);
  if (!list) return false;
  const now = Date.now();
  const live = list.filter((x) => x.until >= now);
  const hit = live.some((x) => x.ino === ino);
  if (hit) live.shift();
  if (live.length) w.expected.set(name, live);
  else w.expected.delete(name);
  return hit;
}

/** An event of `name`, with the entry of `full` when the watcher asked for entries. */
async function eventOf(w: Watcher, full: string, name: string, type: EventType): Promise<FsEventInit> {
  const entry = w.includeEntry ? await entryInfo(full).catch(() => undefined) : undefined;
  return entry ? { name, type, entry } : { name, type };
}

/** One fs.watch over a directory, turned into envd FilesystemEvents. */
export function startWatch(
  dir: string,
  o: { recursive: boolean; includeEntry: boolean },
  push: (e: FsEventInit) => void,
): FSWatcher {
  const me: Watcher = {
    dir,
    recursive: o.recursive,
    includeEntry: o.includeEntry,
    push,
    expected: new Map(),
  };
  const w = watch(dir, { recursive: o.recursive, persistent: false });
  w.on('change', (kind, filename) => {
    const name = String(filename);
    if (TEMP.test(name)) return;
    const full = join(dir, name);
    void lstat(full).then(
      async (st) => {
        if (kind === 'rename' && takeExpected(me, name, st.ino)) return;
        // 'rename' of an existing path is a create (or the new name of a move).
        push(await eventOf(me, full, name, kind === 'change' ? EventType.WRITE : EventType.CREATE));
      },
      () => {
        push({ name, type: kind === 'rename' ? EventType.REMOVE : EventType.WRITE });
      },
    );
  });
  w.on('error', () => undefined);
  watchers.add(me);
  const close = w.close.bind(w);
  w.close = () => {
    watchers.delete(me);
    close();
  };
  return w;
}

/**
 * Before an upload renames its temporary file onto `target`: the watchers that cover it will
 * drop that rename's event (the upload reports what happened instead, uploadDone). Returns the
 * undo for a rename that then fails.
 */
export function expectUploadRename(target: string, ino: number): () => void {
  const marked: [Watcher, string][] = [];
  for (const w of watchers) {
    const name = nameIn(w, target);
    if (name === undefined) continue;
    const list = w.expected.get(name) ?? [];
    list.push({ ino, until: Date.now() + EXPECT_MS });
    w.expected.set(name, list);
    marked.push([w, name]);
  }
  return () => {
    for (const [w, name] of marked) {
      const list = w.expected.get(name)?.filter((x) => x.ino !== ino) ?? [];
      if (list.length) w.expected.set(name, list);
      else w.expected.delete(name);
    }
  };
}

/** After an upload's rename: what envd's watchers see of a write in place (`create` if new, `write`). */
export function uploadDone(target: string, existed: boolean): void {
  for (const w of watchers) {
    const name = nameIn(w, target);
    if (name === undefined) continue;
    const types = existed ? [EventType.WRITE] : [EventType.CREATE, EventType.WRITE];
    void (async () => {
      for (const type of types) w.push(await eventOf(w, target, name, type));
    })();
  }
}
