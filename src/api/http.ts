import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { ERROR_CODES, KilnError, asKilnError, invalidArgument } from '../core/errors.ts';
import { newId } from '../core/ids.ts';

/** What a route handler gets: the parsed request and the request's op id and logger. */
export interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  params: Record<string, string>;
  query: URLSearchParams;
  opId: string;
  log: Logger;
  /** The JSON body (an object), read on first use; `invalid_argument` when malformed. */
  body: () => Promise<Record<string, unknown>>;
}

export type Handler = (c: Ctx) => Promise<unknown>;

export interface Route {
  method: string;
  /** e.g. `/v1/sandboxes/:id` */
  path: string;
  handler: Handler;
  /** Status of a successful answer (204 sends no body). */
  status?: number;
}

const MAX_BODY = 1 << 20;

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > MAX_BODY) throw invalidArgument('body', `larger than ${MAX_BODY} bytes`);
    chunks.push(c as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (text === '') return {};
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw invalidArgument('body', `malformed JSON: ${(e as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw invalidArgument('body', 'must be a JSON object');
  return v as Record<string, unknown>;
}

export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  if (status === 204) {
    res.writeHead(204).end();
    return;
  }
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

export interface RouterOpts {
  /** Shapes an error's body (default: `{code, message, opId}`). The status is always the code's. */
  errorBody?: (e: KilnError, opId: string) => unknown;
  /** Runs before any route is matched (e.g. the API key check); throwing refuses the request. */
  authenticate?: (req: IncomingMessage) => void;
}

/** At most this much of a client's input is echoed in an error message. */
const ECHO_MAX = 120;

const cut = (s: string): string => (s.length > ECHO_MAX ? s.slice(0, ECHO_MAX) + '…' : s);

/** A piece of client input for an error message: JSON-quoted, cut to {@link ECHO_MAX} characters. */
export const echo = (s: string): string => JSON.stringify(cut(s));

/**
 * Parses a request target: origin-form (`/path?query`) or absolute-form (`http://host/path`).
 * Origin-form is appended to a fixed origin instead of being resolved against it, and a path
 * that starts with `//` is refused: `new URL('//[/', base)` reads it as a host (and throws), and
 * a guest agent behind the envd proxy would too. `invalid_argument` (field `url`) otherwise.
 */
export function parseTarget(raw: string | undefined): URL {
  const t = raw ?? '/';
  const bad = (why: string): KilnError =>
    invalidArgument('url', `${echo(t)} is not a valid request target: ${why}`);
  if (t.startsWith('//')) throw bad('a path must not start with "//"');
  let u: URL;
  try {
    u = new URL(t.startsWith('/') ? 'http://kiln' + t : t);
  } catch {
    throw bad(t.startsWith('/') ? 'malformed path' : 'expected a path starting with "/"');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw bad('only http(s) URLs');
  return u;
}

/** `decodeURIComponent` that answers `invalid_argument` (naming `field`) instead of throwing URIError. */
export function decodeParam(field: string, raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw invalidArgument(field, `${echo(raw)} is not valid percent-encoding (UTF-8 bytes as %XX)`);
  }
}

/** A request's socket as it may be: null once Node has detached it. */
const detachable = (req: IncomingMessage): { socket: Socket | null } => req;

/**
 * True when the client has gone away before its answer was complete: a closed connection is
 * the client's doing (it hung up, timed out, was cancelled), not kiln's failure, and is logged
 * as such rather than as an error.
 */
export function clientGone(req: IncomingMessage, res: ServerResponse, e?: unknown): boolean {
  if (res.writableEnded) return false;
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  // Node detaches the socket from a request that was destroyed (a stream consumer that failed
  // may do that): the response's socket, if any, is what counts.
  const sock = res.socket ?? detachable(req).socket;
  return (
    (sock?.destroyed ?? false) ||
    res.destroyed ||
    code === 'ECONNRESET' ||
    code === 'EPIPE' ||
    code === 'ERR_STREAM_PREMATURE_CLOSE'
  );
}

interface CompiledRoute extends Route {
  re: RegExp;
  names: string[];
}

function compile(r: Route): CompiledRoute {
  const names: string[] = [];
  const re = new RegExp(
    '^' +
      r.path.replace(/:([a-zA-Z]+)/g, (_, n: string) => {
        names.push(n);
        return '([^/]+)';
      }) +
      '$',
  );
  return { ...r, re, names };
}

/** The client's X-Kiln-Op-Id when it is a plausible id, else a new one. */
function opIdOf(req: IncomingMessage): string {
  const given = req.headers['x-kiln-op-id'];
  return typeof given === 'string' && /^[a-zA-Z0-9_.-]{1,64}$/.test(given) ? given : newId('req');
}

/** One request as the router sees it. */
interface Exchange {
  req: IncomingMessage;
  res: ServerResponse;
  opId: string;
  log: Logger;
  /** The path, once parsed (for logs). */
  path: string;
}

/** Answers a failed request with its error (or drops it: the client is gone, the head is sent). */
function answerFailure(x: Exchange, opts: RouterOpts, e: unknown): void {
  const { req, res, opId, log } = x;
  try {
    if (clientGone(req, res, e)) {
      log.info(
        { method: req.method, path: x.path, err: (e as Error | undefined)?.message },
        'client went away',
      );
      res.destroy();
      return;
    }
    const k = asKilnError(e);
    if (k.code === 'internal') log.error({ err: e }, 'request failed');
    else log.info({ method: req.method, path: x.path, code: k.code, msg: k.message }, 'request refused');
    if (res.headersSent) {
      res.destroy();
      return;
    }
    let body: unknown;
    try {
      body = opts.errorBody ? opts.errorBody(k, opId) : { ...k.toJSON(), opId };
    } catch {
      body = { code: k.code, message: k.message, opId };
    }
    sendJson(res, ERROR_CODES[k.code].status, body);
  } catch (e2) {
    // Answering failed too (the socket broke under us): drop the connection, keep the daemon.
    log.warn({ err: e2 }, 'could not answer a failed request');
    res.destroy();
  }
}

/** The route for this method and path, and its decoded parameters; `not_found` or a 400 if none. */
function match(
  compiled: CompiledRoute[],
  method: string | undefined,
  path: string,
): { route: CompiledRoute; params: Record<string, string> } {
  const pathMatches = compiled.filter((r) => r.re.test(path));
  const route = pathMatches.find((r) => r.method === method);
  if (!route) {
    throw pathMatches.length
      ? new KilnError('invalid_argument', `method ${method ?? ''} is not allowed on ${path}`)
      : new KilnError('not_found', `no route ${method ?? ''} ${cut(path)}`);
  }
  const m = route.re.exec(path);
  const params: Record<string, string> = {};
  route.names.forEach((n, i) => (params[n] = decodeParam(n, m?.[i + 1] ?? '')));
  return { route, params };
}

/** Runs the handler and sends what it returns (unless it answered itself). */
async function serve(x: Exchange, route: CompiledRoute, ctx: Ctx, t0: number): Promise<void> {
  const out = await route.handler(ctx);
  if (!x.res.headersSent) sendJson(x.res, route.status ?? 200, out);
  x.log.info(
    { method: x.req.method, path: x.path, status: x.res.statusCode, ms: Math.round(performance.now() - t0) },
    'request',
  );
}

/**
 * A small router: one op id per request (minted here, or taken from X-Kiln-Op-Id), sent back in
 * a header and in every error body, and bound to every log line of the request. Errors become
 * `{code, message, opId}` with the status of their catalog code, never chosen by message text.
 *
 * It is the request's error boundary: whatever a parser, the authentication or a handler throws
 * (synchronously or not) is answered here, so no request can throw out of the server.
 */
export function createRouter(
  routes: Route[],
  log: Logger,
  opts: RouterOpts = {},
): (req: IncomingMessage, res: ServerResponse) => void {
  const compiled = routes.map(compile);
  return (req, res) => {
    const opId = opIdOf(req);
    const x: Exchange = { req, res, opId, log: log.child({ opId }), path: '' };
    const t0 = performance.now();
    try {
      res.setHeader('x-kiln-op-id', opId);
      const url = parseTarget(req.url);
      x.path = url.pathname;
      opts.authenticate?.(req);
      const { route, params } = match(compiled, req.method, url.pathname);
      let cached: Promise<Record<string, unknown>> | undefined;
      const ctx: Ctx = {
        req,
        res,
        params,
        query: url.searchParams,
        opId,
        log: x.log,
        body: () => (cached ??= readJson(req)),
      };
      // Through a promise, so a handler that throws synchronously is answered like any other error.
      Promise.resolve()
        .then(() => serve(x, route, ctx, t0))
        .catch((e: unknown) => {
          answerFailure(x, opts, e);
        });
    } catch (e) {
      answerFailure(x, opts, e);
    }
  };
}
