/**
 * Volumes (E2B's): create, list, get, delete; the mounts a create asks for; which volume a
 * guest's connection may reach; the command that mounts them in a guest. A volume is a directory
 * `<data>/volumes/<id>/` owned by the volume owner (an unprivileged uid): sandboxes reach it only
 * through the gateway (./gateway.ts), the content API only through ./content.ts.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { chown, mkdir, realpath, rm } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { Logger } from 'pino';
import type { SandboxState, VolumeMount, VolumeRecord } from '../../core/domain.ts';
import { KilnError, invalidArgument } from '../../core/errors.ts';
import { newId } from '../../core/ids.ts';
import { validateName } from '../../core/validate.ts';
import { MAX_VOLUME_MOUNTS, VOLUME_GUEST_ADDR, VOLUME_GUEST_PORT } from '../../core/volume-route.ts';
import type { Store } from '../../store/store.ts';
import { sees, type Caller } from '../scope.ts';
import type { VolumeRoot } from './content.ts';
import type { VolumeOwner } from './gateway.ts';

/** A mount a create asks for: a volume (name or id) at an absolute guest path. */
export interface VolumeMountRequest {
  name: string;
  path: string;
}

/** States in which a sandbox's guest may (re)connect to its volumes. */
const SERVING: readonly SandboxState[] = ['creating', 'running', 'resuming'];

/** Who owns volume files: `nobody` when kilnd runs as root, else kilnd's own uid. */
export function defaultVolumeOwner(): VolumeOwner {
  const uid = process.getuid?.() ?? 0;
  return uid === 0 ? { uid: 65534, gid: 65534 } : { uid, gid: process.getgid?.() ?? uid };
}

export interface VolumeServiceOpts {
  store: Store;
  /** kilnd's data dir: volumes live in `<dataDir>/volumes/`. */
  dataDir: string;
  owner?: VolumeOwner;
  log: Logger;
  now?: () => number;
}

export class VolumeService {
  readonly #o: VolumeServiceOpts;
  readonly owner: VolumeOwner;

  constructor(o: VolumeServiceOpts) {
    this.#o = o;
    this.owner = o.owner ?? defaultVolumeOwner();
  }

  /** `<dataDir>/volumes` (the gateway's passwd files go in `.etc` there). */
  get baseDir(): string {
    return join(this.#o.dataDir, 'volumes');
  }

  dirOf(id: string): string {
    return join(this.baseDir, id);
  }

  async create(name: string, caller?: Caller): Promise<VolumeRecord> {
    validateName('name', name);
    const v: VolumeRecord = {
      id: newId('vol', 16),
      name,
      token: randomBytes(24).toString('hex'),
      createdAt: new Date((this.#o.now ?? Date.now)()).toISOString(),
      ownerKeyId: caller?.keyId ?? null,
    };
    // Directory first: a crash in between leaves at most an empty directory no record names
    // (not swept yet; harmless, its id is never reused), never a record without its directory.
    const dir = this.dirOf(v.id);
    await mkdir(dir, { recursive: true, mode: 0o755 });
    try {
      await chown(dir, this.owner.uid, this.owner.gid);
      this.#o.store.insertVolume(v);
    } catch (e) {
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
    this.#o.log.info({ volumeId: v.id, name }, 'volume created');
    return v;
  }

  /** The volumes `caller` sees. */
  list(caller?: Caller): VolumeRecord[] {
    return this.#o.store.listVolumes().filter((v) => sees(caller, v.ownerKeyId));
  }

  /** By id or name; another key's volume is not found, like one that does not exist. */
  get(idOrName: string, caller?: Caller): VolumeRecord {
    const v = this.#o.store.getVolume(idOrName);
    if (!sees(caller, v.ownerKeyId))
      throw new KilnError('not_found', `volume "${idOrName}" does not exist`, {
        details: { volume: idOrName },
      });
    return v;
  }

  /** Live sandboxes that mount volume `id`. */
  users(id: string): string[] {
    return this.#o.store.volumeUsers(id);
  }

  /** Deletes a volume and its files; `invalid_state` while a running or paused sandbox mounts it. */
  async delete(idOrName: string, caller?: Caller): Promise<void> {
    const v = this.get(idOrName, caller);
    this.#o.store.deleteVolume(v.id);
    await rm(this.dirOf(v.id), { recursive: true, force: true });
    this.#o.log.info({ volumeId: v.id }, 'volume deleted');
  }

  /** Volume `id` for the content API, if `token` is its token; else `unauthenticated`. */
  byToken(id: string, token: string | undefined): VolumeRecord {
    let v: VolumeRecord | undefined;
    try {
      v = this.#o.store.getVolume(id);
    } catch (e) {
      if (!(e instanceof KilnError && e.code === 'not_found')) throw e;
    }
    const a = Buffer.from(v?.token ?? '');
    const b = Buffer.from(token ?? '');
    if (!v || v.id !== id || a.length !== b.length || !timingSafeEqual(a, b))
      throw new KilnError(
        'unauthenticated',
        `no volume "${id}" with that token (send the volume's token as "Authorization: Bearer <token>")`,
      );
    return v;
  }

  /** The directory (real path) and owner the content API works on. */
  async root(v: VolumeRecord): Promise<VolumeRoot> {
    return { dir: await realpath(this.dirOf(v.id)), owner: this.owner };
  }

  /** Validates a create's mounts (at most MAX_VOLUME_MOUNTS, absolute distinct paths, volumes that exist). */
  planMounts(sandboxId: string, req: readonly VolumeMountRequest[], caller?: Caller): VolumeMount[] {
    if (req.length > MAX_VOLUME_MOUNTS)
      throw invalidArgument('volumeMounts', `at most ${MAX_VOLUME_MOUNTS} volumes per sandbox`);
    const seen = new Set<string>();
    return req.map((m, index) => {
      const field = `volumeMounts[${index}].path`;
      if (typeof m.path !== 'string' || !m.path.startsWith('/'))
        throw invalidArgument(field, 'must be an absolute path in the sandbox (e.g. /mnt/data)');
      const path = posix.normalize(m.path).replace(/(.)\/+$/, '$1');
      if (path === '/' || /[\0\n'"\\]/.test(path) || path.split('/').includes('..'))
        throw invalidArgument(
          field,
          `"${m.path}" cannot be a mount point (not "/", no "..", quotes, backslashes or newlines)`,
        );
      if (seen.has(path)) throw invalidArgument(field, `"${path}" is given twice`);
      seen.add(path);
      if (typeof m.name !== 'string')
        throw invalidArgument(`volumeMounts[${index}].name`, 'must be a string');
      const v = this.get(m.name, caller);
      return { sandboxId, volumeId: v.id, path, index };
    });
  }

  /** Sandbox `sandboxId`'s mounts as E2B shows them (volume name, guest path). */
  mountsOf(sandboxId: string): { name: string; path: string }[] {
    const names = new Map(this.#o.store.listVolumes().map((v) => [v.id, v.name]));
    return this.#o.store
      .listMounts(sandboxId)
      .map((m) => ({ name: names.get(m.volumeId) ?? m.volumeId, path: m.path }));
  }

  /**
   * The volume directory sandbox `sandboxId` may reach at mount index `index`, if it mounts one
   * there and is running (or being created or resumed); else undefined (the gateway refuses).
   */
  connectionDir(sandboxId: string, index: number): string | undefined {
    let state: SandboxState;
    try {
      state = this.#o.store.getSandbox(sandboxId).state;
    } catch {
      return undefined;
    }
    if (!SERVING.includes(state)) return undefined;
    const m = this.#o.store.listMounts(sandboxId).find((x) => x.index === index);
    return m ? this.dirOf(m.volumeId) : undefined;
  }
}

/**
 * The guest command (run as root) that mounts `mounts`: sshfs straight over TCP (directport) to
 * the gateway's port for each index, reconnecting after a pause, restore or kilnd restart; no
 * caching, so other sandboxes' and the content API's writes show at once.
 */
export function mountCommand(mounts: readonly VolumeMount[]): string {
  const lines = mounts.map(
    (m) =>
      `mkdir -p '${m.path}' && sshfs -o directport=${VOLUME_GUEST_PORT + m.index},reconnect,allow_other,dir_cache=no ${VOLUME_GUEST_ADDR}:/vol '${m.path}'`,
  );
  return ['set -e', ...lines].join('\n');
}

/**
 * The guest command (run as root) that makes each restored sshfs mount reconnect: `stat -f`
 * always reaches the server (statfs is not cached); its first try may fail on the connection the
 * guest was saved with, after which sshfs reconnects. At most 5 tries of 10 s per mount.
 */
export function refreshCommand(mounts: readonly VolumeMount[]): string {
  return mounts
    .map(
      (m) =>
        `n=0; until timeout 10 stat -f -- '${m.path}' >/dev/null 2>&1; do n=$((n+1)); [ $n -lt 5 ] || { echo "${m.path} did not reconnect" >&2; exit 1; }; sleep 0.2; done`,
    )
    .join('\n');
}
