/**
 * bench/template, in one run against one kilnd: a cold build of a small template (from `base`:
 * two RUN steps, an ENV, a start command serving HTTP and its ready check), a fully cached
 * rebuild of the same definition (target: under 10% of the cold build), and create-to-first-exec
 * from that template beside the same from `base`, interleaved, median of N (target: within 10%).
 *
 *   scripts/node bench/template.ts [--runs N] [--json]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createToFirstExecMs } from './kiln-measure.ts';
import { benchArgs, median } from './stats.ts';
import { startKilnd } from '../src/api/kilnd.ts';
import { createLogger } from '../src/core/log.ts';
import { loadConfig } from '../src/core/config.ts';
import { KilnClient, type TemplateBuildRequest } from '../src/sdk/client.ts';
import { ensureDefaultImage } from '../test/helpers/image.ts';

const { runs, json } = benchArgs({ runs: 10 });

const DEFINITION: TemplateBuildRequest = {
  name: 'bench-tpl',
  fromTemplate: 'base',
  steps: [
    { type: 'ENV', args: ['APP_DIR', '/home/user/app'] },
    { type: 'RUN', args: ['mkdir -p $APP_DIR && echo hello > $APP_DIR/index.html'] },
    { type: 'RUN', args: ['seq 1 100000 > $APP_DIR/numbers.txt'] },
  ],
  startCmd: 'cd /home/user/app && python3 -m http.server 8000',
  readyCmd: 'curl -sf http://127.0.0.1:8000/index.html',
};

/** Starts a build and waits for its end; the wall time (ms). */
async function buildMs(c: KilnClient, req: TemplateBuildRequest): Promise<number> {
  const t0 = performance.now();
  const b = await c.startTemplateBuild(req);
  for (;;) {
    const st = await c.templateBuild(b.id, 0);
    if (st.status === 'error') throw new Error(`build failed: ${st.reason?.message ?? '?'}`);
    if (st.status === 'ready') return performance.now() - t0;
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function main(): Promise<void> {
  await ensureDefaultImage();
  const root = await mkdtemp('/tmp/kiln-bt-');
  const kilnd = await startKilnd({
    stateDir: root,
    cacheDir: loadConfig().cacheDir,
    log: createLogger({ level: 'warn' }),
  });
  const c = new KilnClient({ socketPath: kilnd.socketPath });
  try {
    await c.buildTemplate({ name: 'base', memoryMiB: 512, vcpus: 1 });
    const cold = await buildMs(c, DEFINITION);
    const cached = await buildMs(c, DEFINITION);
    const fromBase: number[] = [];
    const fromTpl: number[] = [];
    await createToFirstExecMs(c, 'base');
    await createToFirstExecMs(c, DEFINITION.name); // warm both paths once
    for (let i = 0; i < runs; i++) {
      fromBase.push(await createToFirstExecMs(c, 'base'));
      fromTpl.push(await createToFirstExecMs(c, DEFINITION.name));
      if (!json)
        process.stderr.write(
          `run ${i + 1}/${runs}: base ${fromBase.at(-1)?.toFixed(0)} ms, template ${fromTpl.at(-1)?.toFixed(0)} ms\n`,
        );
    }
    const res = {
      bench: 'template',
      runs,
      coldBuildMs: Math.round(cold),
      cachedRebuildMs: Math.round(cached),
      cachedShare: +(cached / cold).toFixed(3),
      cachedTarget: 0.1,
      createToFirstExecBaseMedianMs: Math.round(median(fromBase)),
      createToFirstExecTemplateMedianMs: Math.round(median(fromTpl)),
      createRatio: +(median(fromTpl) / median(fromBase)).toFixed(2),
      createTarget: 1.1,
    };
    if (json) console.log(JSON.stringify(res));
    else {
      console.log(`bench/template (${runs} runs): a small template from base with a running HTTP server`);
      console.log(`  cold build                                  ${res.coldBuildMs} ms`);
      console.log(
        `  fully cached rebuild                        ${res.cachedRebuildMs} ms (${(res.cachedShare * 100).toFixed(1)}% of cold; target < 10%)`,
      );
      console.log(`  create -> first exec, from base     median ${res.createToFirstExecBaseMedianMs} ms`);
      console.log(
        `  create -> first exec, from template median ${res.createToFirstExecTemplateMedianMs} ms (ratio ${res.createRatio}; target <= ${res.createTarget})`,
      );
    }
  } finally {
    await kilnd.close();
    await rm(root, { recursive: true, force: true });
  }
}

await main();
