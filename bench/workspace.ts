/**
 * bench/workspace: in one run, against one sandbox of a kilnd on its own state dir, pushing a
 * generated ~50 MB repository with kiln (`workspace push`, full_copy) beside a bare baseline
 * (host `tar c` of the same files streamed straight into the guest agent's upload through the
 * envd proxy, then `tar x` in the guest: no git, no journal, no staging), then the export time
 * after a few changes in the guest. Target: push / baseline <= 1.2. `kiln sandbox exec` takes
 * no stdin, so the baseline is the agent's upload, the same transport kiln's push uses.
 *
 *   scripts/node bench/workspace.ts [--runs N] [--json]
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { KilnClient } from '../src/sdk/client.ts';
import { exportToFile, pushRepo } from '../src/sdk/workspace/workspace.ts';
import { kilnSync, parseE2bEnv, removeStateDir } from '../test/helpers/kilnd.ts';
import { benchArgs, median } from './stats.ts';

const { runs, json } = benchArgs({ runs: 3 });

/** Host tar of `root` (its files and .git) streamed to the agent's POST /files through the proxy. */
function bareUpload(root: string, proxy: string, id: string, token: string, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const q = new URLSearchParams({ path, username: 'user' });
    const req = request(`${proxy}/files?${q.toString()}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/octet-stream',
        'e2b-sandbox-id': id,
        'e2b-sandbox-port': '49983',
        'x-access-token': token,
      },
    });
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => {
        if (res.statusCode === 200) resolve();
        else reject(new Error(`upload answered ${res.statusCode}`));
      });
    });
    req.on('error', reject);
    const tar = spawn('tar', ['-c', '-f', '-', '-C', root, '.'], { stdio: ['ignore', 'pipe', 'inherit'] });
    tar.stdout.pipe(req);
  });
}

async function main(): Promise<void> {
  const state = await mkdtemp('/tmp/kiln-bench-ws-');
  const env = { ...process.env, KILN_STATE_DIR: state, KILN_E2B_API_PORT: '0', KILN_E2B_SANDBOX_PORT: '0' };
  try {
    const made = kilnSync(env, 'sandbox', 'create', '--json', '--show-token', '--timeout', '3600');
    if (made.status !== 0) throw new Error(made.stderr);
    const s = JSON.parse(made.stdout) as { sandboxId: string; envdAccessToken: string };
    const proxy = parseE2bEnv(kilnSync(env, 'e2b', 'env').stdout).sandboxUrl;
    const c = new KilnClient({ socketPath: `${state}/kilnd.sock` });
    const repo = join(state, 'repo');
    mkdirSync(repo);
    const git = (...a: string[]): string =>
      execFileSync('git', ['-c', 'user.email=b@kiln', '-c', 'user.name=b', ...a], {
        cwd: repo,
        encoding: 'utf8',
      });
    git('init', '-q');
    for (let d = 0; d < 10; d++) {
      mkdirSync(join(repo, `d${d}`));
      for (let f = 0; f < 20; f++) writeFileSync(join(repo, `d${d}`, `f${f}.bin`), randomBytes(128 << 10));
    }
    git('add', '-A');
    git('commit', '-qm', 'bench');
    // The repository on disk: working tree + .git (objects compress nothing: random bytes).
    const bytes = Number(execFileSync('du', ['-sb', repo], { encoding: 'utf8' }).split('\t')[0]);
    const exec = async (cmd: string): Promise<void> => {
      const r = await c.exec(s.sandboxId, cmd, { user: 'user' });
      if (r.exitCode !== 0) throw new Error(`${cmd}: ${r.status}`);
    };
    const kiln: number[] = [];
    const bare: number[] = [];
    for (let i = 0; i < runs; i++) {
      let t0 = performance.now();
      await bareUpload(repo, proxy, s.sandboxId, s.envdAccessToken, '/home/user/bare.tar');
      await exec('rm -rf ~/bare && mkdir ~/bare && tar -x -f ~/bare.tar -C ~/bare && rm ~/bare.tar');
      bare.push(performance.now() - t0);
      t0 = performance.now();
      await pushRepo(c.socketPath, s.sandboxId, repo, { guestPath: '/home/user/repo' });
      kiln.push(performance.now() - t0);
    }
    await exec(
      'cd ~/repo && head -c 1048576 /dev/urandom > d0/f0.bin && echo new > new.txt && git rm -q d1/f1.bin',
    );
    const t0 = performance.now();
    const head = await exportToFile(c.socketPath, s.sandboxId, {}, join(state, 'out.patch'));
    const exportMs = performance.now() - t0;
    const res = {
      bench: 'workspace',
      repoMB: +(bytes / 1e6).toFixed(1),
      runs,
      pushMs: Math.round(median(kiln)),
      bareTarMs: Math.round(median(bare)),
      ratio: +(median(kiln) / median(bare)).toFixed(2),
      target: 1.2,
      exportMs: Math.round(exportMs),
      exportFiles: head.files.length,
    };
    if (json) console.log(JSON.stringify(res));
    else
      console.log(
        `workspace push of ${res.repoMB} MB: kiln ${res.pushMs} ms, bare tar ${res.bareTarMs} ms (ratio ${res.ratio}, target <= ${res.target}); export (${res.exportFiles} files) ${res.exportMs} ms`,
      );
  } finally {
    await removeStateDir(env, state);
    await rm(state, { recursive: true, force: true });
  }
}

await main();
