/**
 * For VM tests that drive a real kilnd in their own state dir: the CLI as a process, and this
 * state dir's QEMU processes (found by their paths, which are under it). A test counts and kills
 * only those: other test runs, other helpers' kilnds and a user's own may share the machine.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { purgeNetworks } from '../../src/net/sandbox-networks.ts';
import { agentGuardTable, removeAgentGuard } from '../../src/vmm/qemu/agent-guard.ts';

export const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `kiln args...` with `env` and waits for it (10 minutes at most: a first create builds the image). */
export function kilnSync(env: NodeJS.ProcessEnv, ...args: string[]): CliResult {
  const r = spawnSync(process.execPath, [CLI, ...args], { env, encoding: 'utf8', timeout: 600_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The pids of the QEMU processes (sandboxes and helper VMs) whose files are under `stateDir`. */
export function ownQemus(stateDir: string): string[] {
  try {
    return execFileSync('pgrep', ['-f', `${stateDir}/vms/`], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .filter(Boolean);
  } catch {
    return []; // pgrep exits 1 when none match
  }
}

/** SIGKILLs this state dir's QEMU processes (a test's clean-up; never anyone else's). */
export function killOwnQemus(stateDir: string): void {
  for (const pid of ownQemus(stateDir)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/**
 * The end of a test that ran kilnd in `stateDir`: stop it, kill its VMs, remove what it made on
 * the host (purgeHost), remove the dir.
 */
export async function removeStateDir(env: NodeJS.ProcessEnv, stateDir: string): Promise<void> {
  kilnSync(env, 'daemon', 'stop');
  killOwnQemus(stateDir);
  await purgeHost(stateDir);
  await rm(stateDir, { recursive: true, force: true });
}

/**
 * What a kilnd of `stateDir` may leave on the host after its VMs are killed: its network
 * namespaces, links and host table, and its agent guard table (a kilnd that stops with VMs still
 * running, or is killed, keeps the guard up for them).
 */
export async function purgeHost(stateDir: string): Promise<void> {
  await purgeNetworks(stateDir);
  await removeAgentGuard({ table: agentGuardTable(stateDir) });
}

/** What `kiln e2b env` prints, parsed exactly: the four variables, nothing else. */
export function parseE2bEnv(stdout: string): {
  apiUrl: string;
  sandboxUrl: string;
  apiKey: string;
  volumeApiUrl: string;
} {
  const m =
    /^export E2B_API_URL='([^']+)' E2B_SANDBOX_URL='([^']+)' E2B_API_KEY='([^']+)' E2B_VOLUME_API_URL='([^']+)'\n$/.exec(
      stdout,
    );
  assert.ok(m?.[1] && m[2] && m[3] && m[4], `kiln e2b env printed: ${stdout}`);
  return { apiUrl: m[1], sandboxUrl: m[2], apiKey: m[3], volumeApiUrl: m[4] };
}

/**
 * Runs `kiln e2b env` with `env` (starting kilnd if needed) and points the e2b SDK at what it
 * printed (E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY, E2B_VOLUME_API_URL in process.env), as
 * `eval "$(kiln e2b env)"` would; returns the URLs' ports.
 */
export function useKilnE2bEnv(env: NodeJS.ProcessEnv): { apiPort: string; proxyPort: string } {
  const r = kilnSync(env, 'e2b', 'env');
  assert.equal(r.status, 0, r.stderr);
  const e = parseE2bEnv(r.stdout);
  process.env['E2B_API_URL'] = e.apiUrl;
  process.env['E2B_SANDBOX_URL'] = e.sandboxUrl;
  process.env['E2B_API_KEY'] = e.apiKey;
  process.env['E2B_VOLUME_API_URL'] = e.volumeApiUrl;
  return { apiPort: new URL(e.apiUrl).port, proxyPort: new URL(e.sandboxUrl).port };
}
