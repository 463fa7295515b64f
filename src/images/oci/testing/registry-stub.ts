/**
 * Test fixture: a tiny in-process registry (distribution API v2, read side) on 127.0.0.1 with an
 * optional bearer-token endpoint. Serves what the test puts in `manifests` and `blobs`.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface StubRegistry {
  port: number;
  registry: string;
  /** By tag or digest: [media type, body]. */
  manifests: Map<string, [string, string]>;
  /** By digest; a test may put different bytes than the digest says. */
  blobs: Map<string, Buffer>;
  /** Requests seen, as "METHOD path". */
  requests: string[];
  close(): Promise<void>;
}

export interface StubAuth {
  /** When set, /v2 wants a bearer token; the token endpoint wants these basic credentials. */
  user?: string;
  password?: string;
  bearer: boolean;
}

export async function startStubRegistry(repo: string, auth?: StubAuth): Promise<StubRegistry> {
  const manifests = new Map<string, [string, string]>();
  const blobs = new Map<string, Buffer>();
  const requests: string[] = [];
  const token = 'stub-token-1';
  let port = 0;
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://x');
    requests.push(`${req.method ?? ''} ${url.pathname}`);
    if (url.pathname === '/token') {
      const want =
        auth?.user !== undefined
          ? `Basic ${Buffer.from(`${auth.user}:${auth.password ?? ''}`).toString('base64')}`
          : undefined;
      if (want !== undefined && req.headers.authorization !== want) {
        res.writeHead(401).end('{"errors":[{"code":"UNAUTHORIZED"}]}');
        return;
      }
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ token, scope: url.searchParams.get('scope') }));
      return;
    }
    if (auth?.bearer && req.headers.authorization !== `Bearer ${token}`) {
      res
        .writeHead(401, {
          'www-authenticate': `Bearer realm="http://127.0.0.1:${port}/token",service="stub",scope="repository:${repo}:pull"`,
        })
        .end();
      return;
    }
    const m = new RegExp(`^/v2/${repo}/(manifests|blobs)/(.+)$`).exec(url.pathname);
    const found = m?.[1] === 'manifests' ? manifests.get(m[2] ?? '') : undefined;
    if (found) {
      res.writeHead(200, { 'content-type': found[0] }).end(found[1]);
      return;
    }
    const blob = m?.[1] === 'blobs' ? blobs.get(m[2] ?? '') : undefined;
    if (blob) {
      res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(blob);
      return;
    }
    res.writeHead(404).end('{"errors":[{"code":"MANIFEST_UNKNOWN"}]}');
  };
  const server = createServer(handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
  return {
    port,
    registry: `127.0.0.1:${port}`,
    manifests,
    blobs,
    requests,
    close: () =>
      new Promise((resolve) =>
        server.close(() => {
          resolve();
        }),
      ),
  };
}
