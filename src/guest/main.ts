/**
 * kiln's guest agent entry: started by /sbin/kiln-init inside every VM, listens on 49983.
 * Bundled by images/agent-bundle.ts into one file for the guest's Node.
 */
// First: protobuf-es (loaded by ./agent.ts) takes the native base64 encoder as it loads.
import './base64.ts';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { bootstrapHashFromCmdline, tokenSha256 } from '../core/envd-auth.ts';
import { AGENT_PORT, createAgent } from './agent.ts';
import { startXattrHelper } from './xattrs.ts';

export { AGENT_PORT, createAgent };

if (process.env['KILN_AGENT_MAIN'] === '1') {
  const port = Number(process.env['KILN_AGENT_PORT'] ?? AGENT_PORT);
  // The agent never listens without a token: its bootstrap token's hash comes from the kernel
  // command line (kilnd puts it there); without one, nothing can ever unlock it but /health.
  let bootstrap = bootstrapHashFromCmdline(readFileSync('/proc/cmdline', 'utf8'));
  if (!bootstrap) {
    process.stderr.write('kiln-agent: no kiln.token_sha256 on the kernel command line: locked\n');
    bootstrap = tokenSha256(randomBytes(32).toString('hex'));
  }
  const agent = createAgent({
    defaultUser: process.env['KILN_AGENT_DEFAULT_USER'] ?? 'user',
    setClock: true,
    bootstrapTokenSha256: bootstrap,
    warmUp: true,
  });
  // File metadata's helper too is started now, so it is running in every template snapshot.
  startXattrHelper();
  // Answer /health only once the helpers are up: a template snapshot is taken right after.
  void agent.ready.then(() => {
    agent.server.listen(port, process.env['KILN_AGENT_HOST'] ?? '0.0.0.0', () => {
      const addr = agent.server.address();
      process.stderr.write(
        `kiln-agent: listening on ${typeof addr === 'object' && addr ? addr.port : port}\n`,
      );
    });
  });
  process.on('uncaughtException', (e) => {
    process.stderr.write(`kiln-agent: uncaught: ${e.stack ?? e.message}\n`);
  });
}
