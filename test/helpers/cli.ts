/** Helpers for the CLI's unit tests: run `kiln` as a process, or build a context with no daemon. */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';
import { NativeHarness } from '../../src/api/testing/harness.ts';
import type { CliContext } from '../../src/cli/context.ts';

const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
  /** stdout as bytes. */
  out: Buffer;
}

/**
 * Runs the CLI asynchronously (so this process can serve a fake daemon) with its own dirs under
 * `home`; `input`, when given, is piped to its stdin (else stdin is /dev/null).
 */
export function runCli(
  home: string,
  args: string[],
  stateDir = join(home, 'state'),
  input?: Buffer,
): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, KILN_CACHE_DIR: join(home, 'cache'), KILN_STATE_DIR: stateDir },
      stdio: [input ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('error', reject);
    // A CLI that stops reading early must not fail the test with EPIPE.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input);
    child.on('close', (status) => {
      const bytes = Buffer.concat(out);
      resolve({ status, stdout: bytes.toString(), stderr, out: bytes });
    });
  });
}

/** A context whose daemon never answers: `connect` records the call and fails. */
export function offlineContext(connects: string[] = []): CliContext {
  return {
    stateDir: '/nonexistent/state',
    cacheDir: '/nonexistent/cache',
    debCacheDir: undefined,
    debianMirror: undefined,
    env: {},
    signal: new AbortController().signal,
    say: () => undefined,
    connect: () => {
      connects.push('connect');
      return Promise.reject(new Error('no daemon in this test'));
    },
  };
}

/**
 * The real CLI against the native API of a fake-driver service (`base` built) served on a fresh
 * state dir's socket; registers its own before/after hooks in the calling suite.
 */
export function cliOnHarness(prefix: string): {
  kiln: (...args: string[]) => Promise<CliRun>;
  /** The CLI with `input` piped to its stdin. */
  kilnWithInput: (input: Buffer, ...args: string[]) => Promise<CliRun>;
  harness: () => NativeHarness;
  /** The native API's unix socket. */
  socket: string;
} {
  const home = mkdtempSync(join(tmpdir(), prefix));
  const state = join(home, 'state');
  let h: NativeHarness | undefined;
  before(async () => {
    mkdirSync(state, { mode: 0o700 });
    h = await NativeHarness.start({ base: true, socket: join(state, 'kilnd.sock') });
  });
  after(async () => {
    await h?.close();
    rmSync(home, { recursive: true, force: true });
  });
  return {
    kiln: (...args) => runCli(home, args, state),
    kilnWithInput: (input, ...args) => runCli(home, args, state, input),
    socket: join(state, 'kilnd.sock'),
    harness: () => {
      if (!h) throw new Error('the harness starts in before()');
      return h;
    },
  };
}
