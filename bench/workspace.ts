/**
 * bench/workspace: in one run, against one sandbox of a kilnd on its own state dir, pushing a
 * generated ~50 MB repository with kiln (`kiln workspace push`, full_copy) beside the issue's
 * baseline, `tar c | kiln sandbox exec SBX -- tar x -C DIR` of the same directory (no git, no
 * journal, no staging), both as CLI processes; then the export time after a few changes in the
 * guest. Before each timed copy its guest copy is removed and the guest's disk synced (untimed);
 * runs alternate which goes first. Prints the medians, their ratio and the median of the runs'
 * own ratios. Target: push / baseline <= 1.2.
 *
 *   scripts/node bench/workspace.ts [--runs N] [--json]
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { KilnClient } from '../src/sdk/client.ts';
import { exportToFile } from '../src/sdk/workspace/workspace.ts';
import { CLI, kilnSync, removeStateDir } from '../test/helpers/kilnd.ts';
import { benchArgs, median } from './stats.ts';

const { runs, json } = benchArgs({ runs: 5 });

/** Runs a shell pipeline; rejects when it fails. */
function shell(script: string, env: NodeJS.ProcessEnv): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn('bash', ['-o', 'pipefail', '-c', script], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (b: Buffer) => (err += b.toString()));
    p.on('error', reject);
    p.on('close', (code) => {
      if (code === 0) resolve();
      else reject(new Error(`${script}: exit ${code}: ${err}`));
    });
  });
}

/** Milliseconds `f` takes. */
async function timed(f: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await f();
  return performance.now() - t0;
}

/**
 * Where a push's time goes, from the journal of the last one (kilnd's clock): until its guest
 * command has made the staging directory (then its input is sent), the stream and unpack (and
 * the rename into a free target, in the same command), then root's move into a taken target
 * (none here: each timed push finds its target gone) and the push's record.
 */
function lastPushPhases(state: string): { stagedMs: number; streamAndUnpackMs: number; moveMs: number } {
  const db = new DatabaseSync(join(state, 'kiln.db'), { readOnly: true });
  const op = db
    .prepare(
      `SELECT steps, started_at AS s, ended_at AS e FROM operations WHERE kind = 'workspace-push' ORDER BY started_at DESC LIMIT 1`,
    )
    .get() as { steps: string; s: string; e: string };
  db.close();
  const [staged = 0, unpacked = 0] = (JSON.parse(op.steps) as { at: string }[]).map((x) => Date.parse(x.at));
  return {
    stagedMs: staged - Date.parse(op.s),
    streamAndUnpackMs: unpacked - staged,
    moveMs: Date.parse(op.e) - unpacked,
  };
}

/** A git repository of ~50 MB (random bytes: nothing compresses) under `state`. */
function makeRepo(state: string): string {
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
  return repo;
}

async function main(): Promise<void> {
  const state = await mkdtemp('/tmp/kiln-bench-ws-');
  const env = { ...process.env, KILN_STATE_DIR: state, KILN_E2B_API_PORT: '0', KILN_E2B_SANDBOX_PORT: '0' };
  try {
    const made = kilnSync(env, 'sandbox', 'create', '--json', '--timeout', '3600');
    if (made.status !== 0) throw new Error(made.stderr);
    const s = JSON.parse(made.stdout) as { sandboxId: string };
    const c = new KilnClient({ socketPath: `${state}/kilnd.sock` });
    const repo = makeRepo(state);
    // The repository on disk: working tree + .git (objects compress nothing: random bytes).
    const bytes = Number(execFileSync('du', ['-sb', repo], { encoding: 'utf8' }).split('\t')[0]);
    const exec = async (cmd: string): Promise<void> => {
      const r = await c.exec(s.sandboxId, cmd, { user: 'user' });
      if (r.exitCode !== 0) throw new Error(`${cmd}: ${r.status}`);
    };
    const kiln: number[] = [];
    const bare: number[] = [];
    const q = (x: string): string => `'${x}'`;
    const cli = `${q(process.execPath)} ${q(CLI)}`;
    const baseline = (): Promise<void> =>
      shell(
        `tar -c -f - -C ${q(repo)} . | ${cli} sandbox exec ${s.sandboxId} -- sh -c 'mkdir ~/bare && tar -x -f - -C ~/bare'`,
        env,
      );
    const push = (): Promise<void> =>
      shell(`${cli} workspace push ${s.sandboxId} ${q(repo)} --guest-path /home/user/repo`, env);
    // Each timed copy starts from the same guest: its target gone and the guest's disk settled
    // (`sync`: the writeback of the copy before it and the discards of the removal are done), so
    // neither pays for the other's 50 MB. Untimed.
    const settle = (dir: string): Promise<void> => exec(`rm -rf ~/${dir} && sync`);
    for (let i = 0; i < runs; i++) {
      const one = async (which: 'bare' | 'kiln'): Promise<void> => {
        await settle(which === 'bare' ? 'bare' : 'repo');
        if (which === 'bare') bare.push(await timed(baseline));
        else kiln.push(await timed(push));
      };
      for (const which of i % 2 === 0 ? (['bare', 'kiln'] as const) : (['kiln', 'bare'] as const))
        await one(which);
    }
    // Run to run the machine varies (up to 2x here); the two of a run saw the same machine.
    const pairRatios = kiln.map((k, i) => k / (bare[i] ?? k));
    const phases = lastPushPhases(state);
    // Both arrived whole: the same files in each.
    await exec(
      'cd ~/bare && find . -path ./.git -prune -o -type f -print0 | sort -z | xargs -0 sha256sum > /tmp/a && cd ~/repo && find . -path ./.git -prune -o -type f -print0 | sort -z | xargs -0 sha256sum > /tmp/b && cmp /tmp/a /tmp/b',
    );
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
      pushRunsMs: kiln.map(Math.round),
      bareTarMs: Math.round(median(bare)),
      bareTarRunsMs: bare.map(Math.round),
      ratio: +(median(kiln) / median(bare)).toFixed(2),
      pairRatios: pairRatios.map((r) => +r.toFixed(2)),
      medianPairRatio: +median(pairRatios).toFixed(2),
      target: 1.2,
      lastPushPhasesMs: phases,
      exportMs: Math.round(exportMs),
      exportFiles: head.files.length,
    };
    if (json) console.log(JSON.stringify(res));
    else
      console.log(
        `workspace push of ${res.repoMB} MB, median of ${runs}: kiln ${res.pushMs} ms (${res.pushRunsMs.join(', ')}), tar c | kiln sandbox exec -- tar x ${res.bareTarMs} ms (${res.bareTarRunsMs.join(', ')}); ratio ${res.ratio}, median of the runs' ratios ${res.medianPairRatio} (${res.pairRatios.join(', ')}; target <= ${res.target}); last push in kilnd: staged ${phases.stagedMs} ms, stream + unpack (+ placing a free target) ${phases.streamAndUnpackMs} ms, root's move (if any) and the record ${phases.moveMs} ms; export (${res.exportFiles} files) ${res.exportMs} ms`,
      );
  } finally {
    await removeStateDir(env, state);
    await rm(state, { recursive: true, force: true });
  }
}

await main();
