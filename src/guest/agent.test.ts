/**
 * The guest agent in-process on the host, driven by the real `e2b` SDK (through a stub control
 * plane that only hands out the agent's address and token). Runs as root here; the same suite
 * runs inside a real guest in test/integration/agent-vm.test.ts.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { envdSuite } from '../../test/envd/envd.suite.ts';
import { connectE2b } from '../../test/helpers/e2b-stub.ts';
import { createAgent } from './agent.ts';

envdSuite('agent in-process (host, root)', async () => {
  const agent = createAgent({ defaultUser: 'root', log: () => undefined });
  await new Promise<void>((r) => agent.server.listen(0, '127.0.0.1', r));
  const agentUrl = `http://127.0.0.1:${(agent.server.address() as AddressInfo).port}`;
  const accessToken = 'tok-' + Math.random().toString(36).slice(2);
  const { sandbox, close } = await connectE2b(agentUrl, {
    accessToken,
    envVars: { KILN_INIT_VAR: 'from-init' },
  });
  const dir = await mkdtemp(join(tmpdir(), 'kiln-agent-'));
  return {
    sandbox,
    agentUrl,
    accessToken,
    defaultUser: 'root',
    dir,
    otherUser: { name: 'nobody' },
    close: async () => {
      await agent.close();
      close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});
