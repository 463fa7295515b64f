import { readFileSync } from 'node:fs';
import { open, readFile, readdir, stat } from 'node:fs/promises';
import { KilnError } from '../../core/errors.ts';

/**
 * The host reads the QEMU driver makes (VM records, /proc, the serial log). Injectable so tests
 * can make them fail the way a daemon out of file descriptors sees them fail (EMFILE): the driver
 * must then answer with an error, never conclude that a VM is gone.
 */
export interface HostIo {
  readFile(path: string): Promise<string>;
  /** Synchronous read (small /proc files). */
  readFileSync(path: string): string;
  readdir(path: string): Promise<string[]>;
  /** Names of the sub-directories of `path`. */
  dirs(path: string): Promise<string[]>;
  /** True for an existing path, false for ENOENT/ENOTDIR; other errors throw. */
  exists(path: string): Promise<boolean>;
  /** The last `maxBytes` of a file (the whole file when smaller). */
  readTail(path: string, maxBytes: number): Promise<string>;
}

export const hostIo: HostIo = {
  readFile: (path) => readFile(path, 'utf8'),
  readFileSync: (path) => readFileSync(path, 'utf8'),
  readdir: (path) => readdir(path),
  dirs: async (path) =>
    (await readdir(path, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name),
  exists: async (path) => {
    try {
      await stat(path);
      return true;
    } catch (e) {
      if (isAbsent(e)) return false;
      throw e;
    }
  },
  readTail: async (path, maxBytes) => {
    const fh = await open(path, 'r');
    try {
      const { size } = await fh.stat();
      const len = Math.min(size, maxBytes);
      const buf = Buffer.alloc(len);
      await fh.read(buf, 0, len, size - len);
      return buf.toString('utf8');
    } finally {
      await fh.close();
    }
  },
};

/**
 * True when the error is a positive observation that the thing is not there: the path does not
 * exist (ENOENT, ENOTDIR) or the process is gone (ESRCH). EMFILE, EACCES, EIO and the like say
 * nothing about the thing itself.
 */
export function isAbsent(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'ESRCH';
}

/** A host read that failed for a reason other than absence, as a `driver_error` that says so. */
export function ioError(what: string, e: unknown): KilnError {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return new KilnError(
    'driver_error',
    `${what} failed (${code ?? (e instanceof Error ? e.message : String(e))}); the VM's state is unknown, not gone — retry later`,
    { cause: e, ...(code ? { details: { errno: code } } : {}) },
  );
}

/**
 * A HostIo whose reads fail with `errno` while a fault is set (tests: a daemon out of file
 * descriptors). `only` limits the fault to paths it accepts.
 */
export function faultyIo(base: HostIo = hostIo): {
  io: HostIo;
  fail: (errno: string | undefined, only?: (path: string) => boolean) => void;
} {
  let fault: { errno: string; only: (path: string) => boolean } | undefined;
  const check = (path: string): void => {
    if (fault?.only(path)) {
      const e: NodeJS.ErrnoException = new Error(`${fault.errno}: injected fault, open '${path}'`);
      e.code = fault.errno;
      throw e;
    }
  };
  const io: HostIo = {
    readFile: async (p) => (check(p), base.readFile(p)),
    readFileSync: (p) => (check(p), base.readFileSync(p)),
    readdir: async (p) => (check(p), base.readdir(p)),
    dirs: async (p) => (check(p), base.dirs(p)),
    exists: async (p) => (check(p), base.exists(p)),
    readTail: async (p, n) => (check(p), base.readTail(p, n)),
  };
  return {
    io,
    fail: (errno, only = () => true) => {
      fault = errno === undefined ? undefined : { errno, only };
    },
  };
}
