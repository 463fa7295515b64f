import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Code, ConnectError, type HandlerContext } from '@connectrpc/connect';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import { ClockSetter } from './clock.ts';
import { tokenSha256 } from '../core/envd-auth.ts';
import { getFile, postFiles } from './files.ts';
import { filesystemService } from './filesystem-service.ts';
import { Filesystem } from '../core/envd/filesystem/filesystem_pb.js';
import { Process } from '../core/envd/process/process_pb.js';
import { AgentAuth, refuse } from './agent-auth.ts';
import { basicUser, sendError, sendJson } from './http-util.ts';
import { handleInit, type InitDeps } from './init.ts';
import { metrics } from './metrics.ts';
import { processService } from './process-service.ts';
import { ProcessManager } from './processes.ts';
import { AGENT_RUN_DIR, PtyServer } from './pty-client.ts';
import type { AgentState } from './state.ts';
import { UnknownUserError, lookupUser, type GuestUser } from './users.ts';
import { warmUp } from './warm-up.ts';

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
  /**
   * Run PTYs through the persistent PTY server (pty-server.ts), started with the agent; default
   * on. `false`: every PTY starts the one-shot helper (tests of that path).
   */
  ptyServer?: boolean;
  /** Root-only directory for the PTY server's socket (default /run/kiln-agent; tests: a temp dir). */
  ptyDir?: string;
  /**
   * Run a command through the agent's own handler, as JSON and as binary protobuf, before
   * `ready` (warm-up.ts), so that the template snapshot holds the compiled request path.
   * main.ts sets it; off by default (tests).
   */
  warmUp?: boolean;
  log?: (line: string) => void;
}

export interface Agent {
  server: Server;
  state: AgentState;
  processes: ProcessManager;
  /** The persistent PTY server, unless opted out. */
  ptys: PtyServer | undefined;
  /** Resolves when the agent's helpers have started (listen after it). */
  ready: Promise<void>;
  close(): Promise<void>;
}

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
  // Both started now, so they are already running in every snapshot taken of this guest.
  const ptys = opts.ptyServer === false ? undefined : new PtyServer({ dir: opts.ptyDir, log });
  const processes = new ProcessManager(ptys);
  const clock = opts.setClock ? new ClockSetter() : undefined;
  const auth = new AgentAuth(state);
  const routes: Routes = {
    state,
    auth,
    init: { state, auth, clock, log },
    userNamed: async (name) => lookupUser(name ?? state.defaultUser),
    rpc: rpcHandler(state, processes),
  };
  const ready = Promise.all([clock?.start(), ptys?.start()]).then(async () => {
    if (!opts.warmUp) return;
    // After the PTY server: the command takes the path every command takes.
    const dir = opts.ptyDir ?? AGENT_RUN_DIR;
    const t0 = performance.now();
    await warmUp({ rpc: routes.rpc, dir, user: state.defaultUser, init: warmInit(state, clock, log) }).then(
      () => {
        log(
          `warm-up: /bin/true ran through the handler (JSON, protobuf), /init over a throwaway state, in ${(performance.now() - t0).toFixed(0)} ms`,
        );
      },
      (e: unknown) => {
        log(`warm-up failed: ${(e as Error).message}`);
      },
    );
  });

  const server = createServer((req, res) => {
    route(req, res, routes).catch((e: unknown) => {
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
    ptys,
    ready,
    close: async () => {
      processes.killAll();
      ptys?.stop();
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

/**
 * The warm-up's /init: the real handler over a throwaway copy of the agent's state, locked with
 * a bootstrap token that exists only here, so it checks a token, reads and applies a body, mixes
 * a seed into the kernel's pool (harmless: more randomness) and reads the time exactly as the
 * first /init after a restore will, and V8 compiles all of that before the template snapshot
 * (compiling after a restore costs tens of milliseconds under TCG: V8's parser runs for the
 * first time in that QEMU). The agent's own state, token and clock are untouched.
 */
function warmInit(
  state: AgentState,
  clock: ClockSetter | undefined,
  log: (line: string) => void,
): { handle: (req: IncomingMessage, res: ServerResponse) => void; token: string } {
  const token = randomBytes(32).toString('hex');
  const scratch: AgentState = {
    ...state,
    envVars: {},
    accessToken: undefined,
    bootstrapTokenSha256: tokenSha256(token),
  };
  const deps: InitDeps = { state: scratch, auth: new AgentAuth(scratch), clock, log };
  return {
    token,
    handle: (req, res) => {
      handleInit(req, res, deps).catch((e: unknown) => {
        sendError(res, 500, (e as Error).message);
      });
    },
  };
}

/** Connect RPC for process.Process and filesystem.Filesystem. */
function rpcHandler(state: AgentState, processes: ProcessManager): Routes['rpc'] {
  const userOf = async (ctx: HandlerContext): Promise<GuestUser> => {
    try {
      return await lookupUser(basicUser(ctx.requestHeader.get('authorization')) ?? state.defaultUser);
    } catch (e) {
      if (e instanceof UnknownUserError) throw new ConnectError(e.message, Code.Unauthenticated);
      throw e;
    }
  };
  return connectNodeAdapter({
    routes: (router) => {
      router.service(Process, processService({ processes, state, userOf }));
      router.service(Filesystem, filesystemService({ state, userOf }));
    },
    // Plain HTTP/1.1 clients (curl) may omit Connect-Protocol-Version; accept them.
    requireConnectProtocolHeader: false,
  });
}

interface Routes {
  state: AgentState;
  auth: AgentAuth;
  init: InitDeps;
  /** The named user, or the default user. */
  userNamed: (name: string | undefined) => Promise<GuestUser>;
  rpc: (req: IncomingMessage, res: ServerResponse) => void;
}

/** Routes one request: /health and /init, /files (own auth), then token-only endpoints and RPC. */
async function route(req: IncomingMessage, res: ServerResponse, r: Routes): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://agent');
  const p = url.pathname;
  const m = req.method ?? 'GET';
  if (p === '/health' && (m === 'GET' || m === 'HEAD')) {
    res.writeHead(204, { 'cache-control': 'no-store' }).end();
    return;
  }
  if (p === '/init' && m === 'POST') return handleInit(req, res, r.init);
  if (p === '/files' && (m === 'GET' || m === 'POST')) return serveFiles(req, res, url.searchParams, r);
  if (!r.auth.tokenOk(req)) {
    refuse(req, res, p.startsWith('/process.Process/') || p.startsWith('/filesystem.Filesystem/'));
    return;
  }
  if (p === '/envs' && m === 'GET') {
    sendJson(res, 200, r.state.envVars);
    return;
  }
  if (p === '/metrics' && m === 'GET') {
    sendJson(res, 200, await metrics());
    return;
  }
  r.rpc(req, res);
}

/** GET / POST /files, as the `username` query parameter's user (or the default user). */
async function serveFiles(
  req: IncomingMessage,
  res: ServerResponse,
  q: URLSearchParams,
  r: Routes,
): Promise<void> {
  const read = req.method !== 'POST';
  const denied = r.auth.filesDenied(req, q, read ? 'read' : 'write');
  if (denied) {
    refuse(req, res, false, denied);
    return;
  }
  let user: GuestUser;
  try {
    user = await r.userNamed(q.get('username') || undefined);
  } catch (e) {
    req.resume();
    sendError(res, 401, `error looking up user: ${(e as Error).message}`);
    return;
  }
  const deps = { user, workdir: r.state.defaultWorkdir };
  return read ? getFile(req, res, q, deps) : postFiles(req, res, q, deps);
}
