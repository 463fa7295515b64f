import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Code, ConnectError, type HandlerContext } from '@connectrpc/connect';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import { ClockSetter } from './clock.ts';
import { getFile, postFiles } from './files.ts';
import { filesystemService } from './filesystem-service.ts';
import { Filesystem } from '../core/envd/filesystem/filesystem_pb.js';
import { Process } from '../core/envd/process/process_pb.js';
import { basicUser, readBody, sendError, sendJson } from './http-util.ts';
import { metrics } from './metrics.ts';
import { processService } from './process-service.ts';
import { ProcessManager } from './processes.ts';
import type { AgentState } from './state.ts';
import { ENVD_VERSION, fileSignature, safeEqual, tokenSha256 } from '../core/envd-auth.ts';
import { UnknownUserError, lookupUser, type GuestUser } from './users.ts';

export const AGENT_PORT = 49983;

export interface AgentOpts {
  /** User for requests that name none (`user` in kiln images, like E2B templates). */
  defaultUser?: string;
  /** Set the guest clock from /init's timestamp (only inside a VM; never on a test host). */
  setClock?: boolean;
  /**
   * SHA-256 (hex) of the bootstrap token: until a request presents that token (X-Access-Token)
   * the agent answers nothing but `/health`; the `/init` that presents it sets the real token.
   * Inside a VM it always comes from the kernel command line (main.ts). Without it the agent
   * takes its first `/init` from anyone (in-process tests only).
   */
  bootstrapTokenSha256?: string;
  log?: (line: string) => void;
}

export interface Agent {
  server: Server;
  state: AgentState;
  processes: ProcessManager;
  /** Resolves when the agent's helpers have started (listen after it). */
  ready: Promise<void>;
  close(): Promise<void>;
}

const UNAUTHORIZED =
  'unauthorized access, please provide a valid access token or method signing if supported';

/**
 * kiln's guest agent: E2B envd's protocol on one HTTP/1.1 port. Connect RPC (process.Process,
 * filesystem.Filesystem) through connect-node; REST (/health, /init, /envs, /metrics, /files)
 * by hand. The agent runs as root and acts for the request's user.
 */
export function createAgent(opts: AgentOpts = {}): Agent {
  const log = opts.log ?? ((l: string) => process.stderr.write(`kiln-agent: ${l}\n`));
  const state: AgentState = {
    accessToken: undefined,
    bootstrapTokenSha256: opts.bootstrapTokenSha256,
    envVars: {},
    defaultUser: opts.defaultUser ?? 'user',
    defaultWorkdir: undefined,
    lastInitMs: 0,
  };
  const processes = new ProcessManager();
  // Started now, so it is already running in every snapshot taken of this guest.
  const clock = opts.setClock ? new ClockSetter() : undefined;
  const ready = clock ? clock.start() : Promise.resolve();

  const userNamed = async (name: string | undefined): Promise<GuestUser> =>
    lookupUser(name ?? state.defaultUser);
  const userOf = async (ctx: HandlerContext): Promise<GuestUser> => {
    try {
      return await userNamed(basicUser(ctx.requestHeader.get('authorization')));
    } catch (e) {
      if (e instanceof UnknownUserError) throw new ConnectError(e.message, Code.Unauthenticated);
      throw e;
    }
  };

  const rpc = connectNodeAdapter({
    routes: (router) => {
      router.service(Process, processService({ processes, state, userOf }));
      router.service(Filesystem, filesystemService({ state, userOf }));
    },
    // Plain HTTP/1.1 clients (curl) may omit Connect-Protocol-Version; accept them.
    requireConnectProtocolHeader: false,
  });

  /** Whether requests need a token at all (false only before a test's first /init). */
  const locked = (): boolean => state.accessToken !== undefined || state.bootstrapTokenSha256 !== undefined;
  const tokenOk = (req: IncomingMessage): boolean => {
    const h = req.headers['x-access-token'];
    if (state.accessToken !== undefined) return typeof h === 'string' && safeEqual(h, state.accessToken);
    if (state.bootstrapTokenSha256 !== undefined)
      return typeof h === 'string' && safeEqual(tokenSha256(h), state.bootstrapTokenSha256);
    return true;
  };
  /** A refusal closes the connection: a client without the token gets nothing kept open. */
  const refuse = (req: IncomingMessage, res: ServerResponse, rpc: boolean, message = UNAUTHORIZED): void => {
    req.resume();
    res.shouldKeepAlive = false;
    if (rpc) sendJson(res, 401, { code: 'unauthenticated', message });
    else sendError(res, 401, message);
  };

  /** /files accepts the access token header, or a signed URL (E2B SDK's uploadUrl/downloadUrl). */
  const filesAuth = (req: IncomingMessage, q: URLSearchParams, op: 'read' | 'write'): string | undefined => {
    if (!locked()) return undefined;
    if (req.headers['x-access-token'] !== undefined) return tokenOk(req) ? undefined : UNAUTHORIZED;
    // Before its first /init the agent only knows the bootstrap token's hash: no signed URLs.
    const token = state.accessToken;
    if (token === undefined) return UNAUTHORIZED;
    const sig = q.get('signature');
    if (!sig) return 'missing signature query parameter';
    const expRaw = q.get('signature_expiration');
    const exp = expRaw === null ? undefined : Number(expRaw);
    if (exp !== undefined && !Number.isInteger(exp)) return 'invalid signature expiration';
    const want = fileSignature(q.get('path') ?? '', op, q.get('username') ?? '', token, exp);
    if (!safeEqual(sig, want)) return 'invalid signature';
    if (exp !== undefined && exp < Math.floor(Date.now() / 1000)) return 'signature is already expired';
    return undefined;
  };

  const handleInit = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (locked() && !tokenOk(req)) {
      refuse(req, res, false);
      return;
    }
    let body: {
      envVars?: Record<string, string>;
      accessToken?: string;
      defaultUser?: string;
      defaultWorkdir?: string;
      timestamp?: string;
    };
    try {
      const raw = await readBody(req);
      const parsed: unknown = raw.length ? JSON.parse(raw.toString('utf8')) : {};
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
        throw new TypeError('body must be a JSON object');
      body = parsed;
    } catch (e) {
      sendError(res, 400, `invalid /init body: ${(e as Error).message}`);
      return;
    }
    const ts = body.timestamp ? Date.parse(body.timestamp) : NaN;
    if (Number.isFinite(ts) && ts < state.lastInitMs) {
      res.writeHead(204, { 'x-envd-version': ENVD_VERSION }).end(); // a replay: ignore
      return;
    }
    if (body.defaultUser) {
      try {
        await lookupUser(body.defaultUser);
      } catch (e) {
        sendError(res, 400, (e as Error).message);
        return;
      }
      state.defaultUser = body.defaultUser;
    }
    if (body.envVars && typeof body.envVars === 'object') state.envVars = { ...body.envVars };
    // A token, once held, is only ever replaced: an /init without one keeps the current one.
    if (typeof body.accessToken === 'string' && body.accessToken !== '') {
      state.accessToken = body.accessToken;
      state.bootstrapTokenSha256 = undefined;
    }
    if (body.defaultWorkdir) state.defaultWorkdir = body.defaultWorkdir;
    if (Number.isFinite(ts)) {
      state.lastInitMs = ts;
      const skew = Date.now() - ts;
      // A restored snapshot wakes with the clock it was saved with: set it from the host's.
      if (clock && (skew < -50 || skew > 5000)) {
        const how = await clock.set(ts);
        log(`clock set from /init by ${how} (was ${skew} ms off)`);
      }
    }
    res.writeHead(204, { 'x-envd-version': ENVD_VERSION }).end();
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://agent');
    const p = url.pathname;
    const m = req.method ?? 'GET';
    if (p === '/health' && (m === 'GET' || m === 'HEAD')) {
      res.writeHead(204, { 'cache-control': 'no-store' }).end();
      return;
    }
    if (p === '/init' && m === 'POST') return handleInit(req, res);
    if (p === '/files' && (m === 'GET' || m === 'POST')) {
      const denied = filesAuth(req, url.searchParams, m === 'GET' ? 'read' : 'write');
      if (denied) {
        refuse(req, res, false, denied);
        return;
      }
      let user: GuestUser;
      try {
        user = await userNamed(url.searchParams.get('username') || undefined);
      } catch (e) {
        req.resume();
        sendError(res, 401, `error looking up user: ${(e as Error).message}`);
        return;
      }
      const deps = { user, workdir: state.defaultWorkdir };
      return m === 'GET'
        ? getFile(req, res, url.searchParams, deps)
        : postFiles(req, res, url.searchParams, deps);
    }
    if (!tokenOk(req)) {
      refuse(req, res, p.startsWith('/process.Process/') || p.startsWith('/filesystem.Filesystem/'));
      return;
    }
    if (p === '/envs' && m === 'GET') {
      sendJson(res, 200, state.envVars);
      return;
    }
    if (p === '/metrics' && m === 'GET') {
      sendJson(res, 200, await metrics());
      return;
    }
    rpc(req, res);
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      log(`request ${req.method ?? ''} ${req.url ?? ''} failed: ${(e as Error).message}`);
      sendError(res, 500, (e as Error).message);
    });
  });
  // Long Connect streams (commands, watches) must not be cut by server timeouts.
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  server.keepAliveTimeout = 650_000;

  return {
    server,
    state,
    processes,
    ready,
    close: async () => {
      processes.killAll();
      clock?.stop();
      server.closeAllConnections();
      await new Promise<void>((r) => {
        server.close(() => {
          r();
        });
      });
    },
  };
}
