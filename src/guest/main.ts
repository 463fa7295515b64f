/**
 * kiln's guest agent: runs inside every VM (started by /sbin/kiln-init), listens on 49983.
 * This is the minimal agent of the foundation: `GET /health` answers 204 so the host can see
 * readiness. The envd-compatible process and filesystem services build on it.
 * Bundled by images/agent-bundle.ts into one file for the guest's Node runtime.
 */
import { createServer } from 'node:http';

export const AGENT_PORT = 49983;

export function createAgentServer(): ReturnType<typeof createServer> {
  return createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://guest');
    if (url.pathname === '/health' && (req.method === 'GET' || req.method === 'HEAD')) {
      res.writeHead(204).end();
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ code: 404, message: `no route ${req.method ?? ''} ${url.pathname}` }));
  });
}

if (process.env['KILN_AGENT_MAIN'] === '1') {
  const port = Number(process.env['KILN_AGENT_PORT'] ?? AGENT_PORT);
  createAgentServer().listen(port, '0.0.0.0', () => {
    process.stderr.write(`kiln-agent: listening on ${port}\n`);
  });
}
