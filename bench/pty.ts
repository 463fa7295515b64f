/**
 * bench/pty: against one guest, the time from `sandbox.pty.create()` (the real `e2b` SDK) to the
 * terminal's first output byte (the login shell's prompt), beside, timed inside the guest with no
 * agent or network in the way: the same login shell in a pseudo-terminal under util-linux
 * `script` (the bare floor), and under kiln's PTY helper started as the agent starts it
 * (`python3 -u -I -S`) and as it was started before (`python3 -u`, site module loaded).
 *
 *   scripts/node bench/pty.ts [--runs N] [--json]
 */
import type { Sandbox } from 'e2b';
import { benchArgs, percentile } from './stats.ts';
import { PTY_HELPER } from '../src/guest/pty-helper.ts';
import { bootAgentVm } from '../test/helpers/guest.ts';

const { runs, json } = benchArgs({ runs: 10 });

/** In the guest: p50 of spawn -> first byte on stdout, for each command line given (as JSON). */
const IN_GUEST = String.raw`
import json, os, subprocess, sys, time
cmds, n = json.loads(sys.argv[1]), int(sys.argv[2])
out = {}
for name, argv in cmds.items():
    xs = []
    for i in range(n):
        t = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        os.read(p.stdout.fileno(), 1)
        xs.append((time.perf_counter() - t) * 1000)
        os.killpg(p.pid, 9)
        p.wait()
    xs.sort()
    out[name] = xs[len(xs) // 2]
print(json.dumps(out))
`;

/** `pty.create` -> the first output byte, in ms; the time to the start event goes to `started`. */
async function ptyFirstByte(sbx: Sandbox, started: number[]): Promise<number> {
  let resolve: () => void = () => undefined;
  const got = new Promise<void>((r) => (resolve = r));
  const t0 = performance.now();
  const h = await sbx.pty.create({
    cols: 80,
    rows: 24,
    onData: () => {
      resolve();
    },
    timeoutMs: 60_000,
  });
  started.push(performance.now() - t0);
  await got;
  const ms = performance.now() - t0;
  await sbx.pty.kill(h.pid);
  await h.wait().catch(() => undefined);
  return ms;
}

async function main(): Promise<void> {
  const vm = await bootAgentVm({ memoryMiB: 512 });
  const { sandbox: sbx, info } = vm;
  try {
    const started: number[] = [];
    const firstByte = (): Promise<number> => ptyFirstByte(sbx, started);
    await firstByte(); // warm: the agent's first PTY, the SDK's connection
    started.length = 0;
    const e2e: number[] = [];
    for (let i = 0; i < runs; i++) e2e.push(await firstByte());

    await sbx.files.write('/tmp/kiln-pty-helper.py', PTY_HELPER);
    await sbx.files.write('/tmp/kiln-pty-bench.py', IN_GUEST);
    // The user's login shell as the agent starts it: the user's HOME (its .bashrc), TERM, a PTY.
    const shell = [
      'env',
      'HOME=/home/user',
      'USER=user',
      'LOGNAME=user',
      // What the SDK's pty.create adds to the command's environment.
      'TERM=xterm-256color',
      'LANG=C.UTF-8',
      'LC_ALL=C.UTF-8',
      'setpriv',
      '--reuid=1000',
      '--regid=1000',
      '--init-groups',
      '--',
      '/bin/bash',
      '-i',
      '-l',
    ];
    const cmds = {
      script: ['script', '-qfc', shell.join(' '), '/dev/null'],
      helper: ['python3', '-u', '-I', '-S', '/tmp/kiln-pty-helper.py', '80', '24', ...shell],
      helperSite: ['python3', '-u', '/tmp/kiln-pty-helper.py', '80', '24', ...shell],
    };
    const r = await sbx.commands.run(
      `python3 /tmp/kiln-pty-bench.py '${JSON.stringify(cmds)}' ${Math.max(runs, 5)}`,
      { user: 'root', timeoutMs: 300_000, envs: { TERM: 'xterm-256color' } },
    );
    const guest = JSON.parse(r.stdout) as Record<keyof typeof cmds, number>;
    const res = {
      bench: 'pty',
      accel: info.accel,
      runs,
      e2eFirstByteP50Ms: +percentile(e2e, 50).toFixed(1),
      e2eFirstByteP99Ms: +percentile(e2e, 99).toFixed(1),
      e2eStartedP50Ms: +percentile(started, 50).toFixed(1),
      guestScriptP50Ms: +guest.script.toFixed(1),
      guestHelperP50Ms: +guest.helper.toFixed(1),
      guestHelperWithSiteP50Ms: +guest.helperSite.toFixed(1),
      kilnShareP50Ms: +(percentile(e2e, 50) - guest.script).toFixed(1),
    };
    if (json) console.log(JSON.stringify(res));
    else {
      console.log(`bench/pty (${info.accel}, ${runs} runs, one guest): pty.create -> first output byte`);
      console.log(
        `  e2b pty.create, first byte            p50 ${res.e2eFirstByteP50Ms} ms   p99 ${res.e2eFirstByteP99Ms} ms`,
      );
      console.log(`  e2b pty.create resolved (start event)  p50 ${res.e2eStartedP50Ms} ms`);
      console.log(`  in guest: login shell under script     p50 ${res.guestScriptP50Ms} ms   (the floor)`);
      console.log(`  in guest: under kiln's helper (-I -S)  p50 ${res.guestHelperP50Ms} ms`);
      console.log(
        `  in guest: the helper with site loaded  p50 ${res.guestHelperWithSiteP50Ms} ms   (as before)`,
      );
      console.log(`  => agent + SDK + network share         p50 ${res.kilnShareP50Ms} ms`);
    }
  } finally {
    await vm.close();
  }
}

await main();
