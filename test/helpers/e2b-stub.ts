import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Sandbox } from 'e2b';
import { BOOTSTRAP_KERNEL_ARG, tokenSha256 } from '../../src/core/envd-auth.ts';

/**
 * The smallest control plane the `e2b` SDK needs to reach one envd: it answers
 * `POST /v2/sandboxes/{id}/connect` with the sandbox's envd version and access token. Used to
 * drive a guest agent directly with the real SDK before the daemon exists (and in agent tests).
 */
export async function startE2bStub(envd: {
  envdAccessToken?: string;
  envdVersion?: string;
}): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    const m = /^\/v2\/sandboxes\/([^/]+)\/connect$/.exec(req.url ?? '');
    req.resume();
    if (req.method === 'POST' && m?.[1]) {
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          sandboxID: decodeURIComponent(m[1]),
          templateID: 'base',
          clientID: 'kiln',
          envdVersion: envd.envdVersion ?? '0.6.13',
          ...(envd.envdAccessToken ? { envdAccessToken: envd.envdAccessToken } : {}),
        }),
      );
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ code: 404, message: `stub: no route ${req.method ?? ''} ${req.url ?? ''}` }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

/**
 * Connects the real `e2b` SDK to one guest agent: optionally /init's it first (token, env,
 * default user, host time), presenting `currentToken` (the token or bootstrap token the agent
 * holds now), then hands the SDK the agent's address through a stub control plane.
 */
export async function connectE2b(
  agentUrl: string,
  init?: { accessToken?: string; defaultUser?: string; envVars?: Record<string, string> },
  currentToken?: string,
): Promise<{ sandbox: Sandbox; close: () => void }> {
  if (init) {
    const r = await fetch(`${agentUrl}/init`, {
      method: 'POST',
      headers: currentToken ? { 'x-access-token': currentToken } : {},
      body: JSON.stringify({ ...init, timestamp: new Date().toISOString() }),
    });
    if (r.status !== 204) throw new Error(`/init answered ${r.status}: ${await r.text()}`);
  }
  const stub = await startE2bStub(init?.accessToken ? { envdAccessToken: init.accessToken } : {});
  const sandbox = await Sandbox.connect('sbx-kiln', {
    apiUrl: stub.url,
    sandboxUrl: agentUrl,
    apiKey: 'e2b_kiln_test',
  });
  return {
    sandbox,
    close: () => {
      stub.server.close();
    },
  };
}

/**
 * A bootstrap token for a guest booted directly (not by kilnd) and the kernel argument that
 * hands its agent the token's hash: the agent obeys nothing but /health until it is presented.
 */
export function bootstrapToken(): { token: string; kernelArgs: string[] } {
  const token = randomBytes(24).toString('hex');
  return { token, kernelArgs: [`${BOOTSTRAP_KERNEL_ARG}=${tokenSha256(token)}`] };
}
