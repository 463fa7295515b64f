/**
 * A template build's definition as E2B's `TemplateBuildStartV2` carries it (the `e2b` SDK's
 * `Template` builder sends it; kiln's Dockerfile parser makes the same), parsed and checked into
 * kiln's step list, and the keys of the layer cache. Pure: no I/O.
 *
 * The SDK compiles its helpers (aptInstall, npmInstall, pipInstall, gitClone, makeSymlink,
 * remove, rename, makeDir) to RUN steps, so five step types cover all of it.
 */
import { createHash } from 'node:crypto';
import { invalidArgument } from './errors.ts';
import { parseRegistryLogin, type RegistryLogin } from './registry-login.ts';

/** One step; `force` re-runs it (and every step after it) whatever the cache holds. */
export type BuildStep =
  | { kind: 'RUN'; cmd: string; user?: string; force: boolean }
  | {
      kind: 'COPY';
      src: string;
      dest: string;
      user?: string;
      /** Octal permission bits the copied files get. */
      mode?: number;
      /** The SDK's content hash of what `src` names: where kilnd stored its upload. */
      filesHash: string;
      force: boolean;
    }
  | { kind: 'ENV'; envs: [string, string][]; force: boolean }
  | { kind: 'WORKDIR'; path: string; force: boolean }
  | { kind: 'USER'; user: string; force: boolean };

export interface BuildSpec {
  /**
   * Exactly one: a kiln template (name or id) or an OCI image reference, with the registry
   * credentials to pull it (in memory only: a stored copy of the spec shows none of them).
   */
  from: { template: string } | { image: string; registry?: RegistryLogin };
  steps: BuildStep[];
  startCmd?: string;
  readyCmd?: string;
  /** Ignore the whole cache (the SDK's skipCache). */
  force: boolean;
}

/** The image the SDK's `Template()` uses when no base was named; kiln's `base` stands for it. */
export const E2B_DEFAULT_IMAGE = 'e2bdev/base';

/** A step does something to the VM's disk (and gets a layer); the others only change later steps' context. */
export const changesVm = (s: BuildStep): boolean => s.kind === 'RUN' || s.kind === 'COPY';

const FILES_HASH_RE = /^[A-Za-z0-9+/=_-]{16,128}$/;
const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const USER_RE = /^[a-z_][a-z0-9_-]*$/;

function str(v: unknown, field: string, opts: { empty?: boolean } = {}): string {
  if (typeof v !== 'string') throw invalidArgument(field, 'must be a string');
  if (!opts.empty && v.length === 0) throw invalidArgument(field, 'must not be empty');
  if (v.includes('\0')) throw invalidArgument(field, 'must not contain NUL');
  return v;
}

function user(v: string, field: string): string {
  if (!USER_RE.test(v)) throw invalidArgument(field, `"${v}" is not a user name`);
  return v;
}

/** Checks a content hash before it names a file under the state dir. */
export function validateFilesHash(v: unknown, field = 'hash'): string {
  const s = str(v, field);
  if (!FILES_HASH_RE.test(s)) throw invalidArgument(field, `"${s}" is not a files hash`);
  return s;
}

function parseStep(raw: unknown, i: number): BuildStep {
  const at = `steps[${i}]`;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw invalidArgument(at, 'must be an object {type, args}');
  const r = raw as Record<string, unknown>;
  const type = str(r['type'], `${at}.type`);
  const args = r['args'] ?? [];
  if (!Array.isArray(args) || args.some((a) => typeof a !== 'string'))
    throw invalidArgument(`${at}.args`, 'must be an array of strings');
  const a = args as string[];
  const force = r['force'] === true;
  const need = (n: number, what: string): void => {
    if (a.length < n) throw invalidArgument(`${at}.args`, `${type} needs ${what}`);
  };
  switch (type) {
    case 'RUN': {
      need(1, 'a command');
      const cmd = str(a[0], `${at}.args[0]`);
      const u = a[1] ? user(a[1], `${at}.args[1]`) : undefined;
      return { kind: 'RUN', cmd, ...(u ? { user: u } : {}), force };
    }
    case 'COPY': {
      need(2, 'a source and a destination');
      const src = str(a[0], `${at}.args[0]`);
      if (src.startsWith('/') || src.split('/').includes('..'))
        throw invalidArgument(`${at}.args[0]`, `"${src}" must be a path inside the build context`);
      const dest = str(a[1], `${at}.args[1]`);
      const u = a[2] ? user(a[2], `${at}.args[2]`) : undefined;
      let mode: number | undefined;
      if (a[3]) {
        if (!/^[0-7]{1,4}$/.test(a[3]))
          throw invalidArgument(`${at}.args[3]`, `"${a[3]}" is not an octal mode`);
        mode = parseInt(a[3], 8);
      }
      const filesHash = validateFilesHash(r['filesHash'], `${at}.filesHash`);
      return {
        kind: 'COPY',
        src,
        dest,
        ...(u ? { user: u } : {}),
        ...(mode !== undefined ? { mode } : {}),
        filesHash,
        force,
      };
    }
    case 'ENV': {
      if (a.length === 0 || a.length % 2 !== 0)
        throw invalidArgument(`${at}.args`, 'ENV needs name/value pairs');
      const envs: [string, string][] = [];
      for (let k = 0; k < a.length; k += 2) {
        const name = a[k] ?? '';
        if (!ENV_NAME_RE.test(name))
          throw invalidArgument(`${at}.args[${k}]`, `"${name}" is not a variable name`);
        envs.push([name, a[k + 1] ?? '']);
      }
      return { kind: 'ENV', envs, force };
    }
    case 'WORKDIR': {
      need(1, 'a path');
      return { kind: 'WORKDIR', path: str(a[0], `${at}.args[0]`), force };
    }
    case 'USER': {
      need(1, 'a user');
      return { kind: 'USER', user: user(str(a[0], `${at}.args[0]`), `${at}.args[0]`), force };
    }
    default:
      throw invalidArgument(
        `${at}.type`,
        `"${type}" is not a step kiln runs (RUN, COPY, ENV, WORKDIR, USER)`,
      );
  }
}

/** Parses E2B's `TemplateBuildStartV2` body; `invalid_argument` naming the field for bad input. */
export function parseBuildSpec(body: Record<string, unknown>): BuildSpec {
  const image = body['fromImage'];
  const template = body['fromTemplate'];
  const hasImage = typeof image === 'string' && image.length > 0;
  const hasTemplate = typeof template === 'string' && template.length > 0;
  if (hasImage === hasTemplate)
    throw invalidArgument('fromTemplate', 'exactly one of fromImage and fromTemplate must be given');
  // Checked whatever the base; kept only for an image (the SDK keeps them across fromTemplate).
  const registry = parseRegistryLogin(body['fromImageRegistry']);
  const steps = body['steps'] ?? [];
  if (!Array.isArray(steps)) throw invalidArgument('steps', 'must be an array');
  const opt = (k: string): string | undefined => {
    const v = body[k];
    return v === undefined || v === null || v === '' ? undefined : str(v, k);
  };
  const startCmd = opt('startCmd');
  const readyCmd = opt('readyCmd');
  return {
    from: hasImage ? { image, ...(registry ? { registry } : {}) } : { template: template as string },
    steps: steps.map(parseStep),
    ...(startCmd !== undefined ? { startCmd } : {}),
    ...(readyCmd !== undefined ? { readyCmd } : {}),
    force: body['force'] === true,
  };
}

/** The key of the layer a build starts from: the parent snapshot itself. */
export const rootLayerKey = (parentSnapshotId: string): string =>
  createHash('sha256').update(`kiln-layer-v1\0${parentSnapshotId}`).digest('hex');

/**
 * The key of the state after `step` on top of the state keyed `parent`: sha256 over the parent
 * key and the step's JSON (which holds the files hash of a COPY). `force` is not part of it.
 */
export function layerKey(parent: string, step: BuildStep): string {
  const rest: Partial<BuildStep> = { ...step };
  delete rest.force;
  return createHash('sha256').update(parent).update('\0').update(JSON.stringify(rest)).digest('hex');
}

/**
 * The key of a template's finished running state: its template, the last layer key (which covers
 * every step and the parent) and the start and ready commands.
 */
export function finalKey(templateId: string, lastKey: string, startCmd?: string, readyCmd?: string): string {
  return createHash('sha256')
    .update(JSON.stringify(['kiln-template-v1', templateId, lastKey, startCmd ?? null, readyCmd ?? null]))
    .digest('hex');
}

/** The snapshot name of a layer: hidden from users' snapshot lists. */
export const LAYER_PREFIX = 'kiln-layer-';
/** The snapshot name of a built template's running state. */
export const TEMPLATE_SNAP_PREFIX = 'kiln-tpl-';
export const layerName = (key: string): string => `${LAYER_PREFIX}${key.slice(0, 40)}`;
export const templateSnapName = (key: string): string => `${TEMPLATE_SNAP_PREFIX}${key.slice(0, 40)}`;
export const isInternalSnapshotName = (n: string | null): boolean =>
  n !== null && (n.startsWith(LAYER_PREFIX) || n.startsWith(TEMPLATE_SNAP_PREFIX));

/** kiln's hidden templates: an OCI image's base (`kiln-img-<image key>`, api/oci-templates.ts). */
export const IMAGE_TEMPLATE_PREFIX = 'kiln-img-';
/** A parent booted again with a build's cpuCount/memoryMB (`kiln-res-<mem>m<cpus>c-<template id>`). */
export const RESOURCES_TEMPLATE_PREFIX = 'kiln-res-';
/** A deleted template's record, kept while sandbox records name it (`kiln-deleted-<id>`, no snapshot). */
export const DELETED_TEMPLATE_PREFIX = 'kiln-deleted-';
/** Templates kiln made for itself, which template garbage collection may remove once unused. */
export const isHiddenTemplateName = (n: string): boolean =>
  [IMAGE_TEMPLATE_PREFIX, RESOURCES_TEMPLATE_PREFIX, DELETED_TEMPLATE_PREFIX].some((p) => n.startsWith(p));

/** One line of a build's log. */
export interface BuildLogEntry {
  timestamp: string;
  level: 'debug' | 'info' | 'warn' | 'error';
  message: string;
  step?: string;
}

/** The SDK polls with `logsOffset`: the entries from there, at most `limit` (E2B answers 100). */
export function logsFrom<T>(entries: readonly T[], offset: unknown, limit = 100): T[] {
  const n = parseLogsOffset(offset);
  return entries.slice(n, n + limit);
}

/** The `logsOffset` query: a count of entries already seen (absent: 0). */
export function parseLogsOffset(offset: unknown): number {
  const n = offset === undefined || offset === null || offset === '' ? 0 : Number(offset);
  if (!Number.isInteger(n) || n < 0)
    throw invalidArgument('logsOffset', `"${String(offset)}" is not an offset`);
  return n;
}

/** How a step reads in the build log, e.g. `RUN apt-get install -y curl`. */
export function describeStep(s: BuildStep): string {
  switch (s.kind) {
    case 'RUN':
      return `RUN ${s.cmd}${s.user ? ` (as ${s.user})` : ''}`;
    case 'COPY':
      return `COPY ${s.src} ${s.dest}`;
    case 'ENV':
      return `ENV ${s.envs.map(([k, v]) => `${k}=${v}`).join(' ')}`;
    case 'WORKDIR':
      return `WORKDIR ${s.path}`;
    case 'USER':
      return `USER ${s.user}`;
  }
}

/** Splits E2B's `name:tag` into the template name and its tag (none: undefined). */
export function splitNameTag(ref: string): { name: string; tag?: string } {
  const i = ref.lastIndexOf(':');
  if (i <= 0) return { name: ref };
  return { name: ref.slice(0, i), tag: ref.slice(i + 1) };
}
