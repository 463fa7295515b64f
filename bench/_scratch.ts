import { mkdtemp, rm } from 'node:fs/promises';
import { startKilnd } from '/work/wt-i15-density/src/api/kilnd.ts';
import { createLogger } from '/work/wt-i15-density/src/core/log.ts';
import { loadConfig } from '/work/wt-i15-density/src/core/config.ts';
import { KilnClient } from '/work/wt-i15-density/src/sdk/client.ts';
const root = await mkdtemp('/tmp/kiln-scr-');
const kilnd = await startKilnd({ stateDir: root, cacheDir: loadConfig().cacheDir, log: createLogger({ level: 'warn' }), network: { mode: 'isolated' } });
const c = new KilnClient({ socketPath: kilnd.socketPath });
try {
  await c.buildTemplate({ name: 'base', memoryMiB: 512, vcpus: 1 });
  const s = await c.createSandbox({ template: 'base', timeoutS: 600 });
  const cmds = process.argv.slice(2);
  for (const cmd of cmds) {
    let out = '';
    await c.exec(s.sandboxId, cmd, { user: 'root', onStdout: (b) => (out += b.toString()), onStderr: (b) => (out += b.toString()) } as never);
    console.log(`$ ${cmd}\n${out}`);
  }
  await c.killSandbox(s.sandboxId);
} finally { await kilnd.close(); await rm(root, { recursive: true, force: true }); }
