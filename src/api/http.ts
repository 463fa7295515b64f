import type { IncomingMessage, ServerResponse } from 'node:http';
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

/**
 * A small router: one op id per request (minted here, or taken from X-Kiln-Op-Id), sent back in
 * a header and in every error body, and bound to every log line of the request. Errors become
 * `{code, message, opId}` with the status of their catalog code, never chosen by message text.
 */
export function createRouter(
  routes: Route[],
  log: Logger,
  opts: RouterOpts = {},
): (req: IncomingMessage, res: ServerResponse) => void {
  const compiled = routes.map((r) => {
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
  });
  return (req, res) => {
    const given = req.headers['x-kiln-op-id'];
    const opId = typeof given === 'string' && /^[a-zA-Z0-9_.-]{1,64}$/.test(given) ? given : newId('req');
    res.setHeader('x-kiln-op-id', opId);
    const rlog = log.child({ opId });
    const url = new URL(req.url ?? '/', 'http://kiln');
    let cached: Promise<Record<string, unknown>> | undefined;
    const fail = (e: unknown): void => {
      const k = asKilnError(e);
      if (k.code === 'internal') rlog.error({ err: e }, 'request failed');
      else rlog.info({ code: k.code, msg: k.message }, 'request refused');
      if (res.headersSent) {
        res.destroy();
        return;
      }
      sendJson(
        res,
        ERROR_CODES[k.code].status,
        opts.errorBody ? opts.errorBody(k, opId) : { ...k.toJSON(), opId },
      );
    };
    if (opts.authenticate) {
      try {
        opts.authenticate(req);
      } catch (e) {
        req.resume();
        fail(e);
        return;
      }
    }
    const pathMatches = compiled.filter((r) => r.re.test(url.pathname));
    const route = pathMatches.find((r) => r.method === req.method);
    if (!route) {
      req.resume();
      fail(
        pathMatches.length
          ? new KilnError('invalid_argument', `method ${req.method ?? ''} is not allowed on ${url.pathname}`)
          : new KilnError('not_found', `no route ${req.method ?? ''} ${url.pathname}`),
      );
      return;
    }
    const m = route.re.exec(url.pathname);
    const params: Record<string, string> = {};
    route.names.forEach((n, i) => (params[n] = decodeURIComponent(m?.[i + 1] ?? '')));
    const ctx: Ctx = {
      req,
      res,
      params,
      query: url.searchParams,
      opId,
      log: rlog,
      body: () => (cached ??= readJson(req)),
    };
    const t0 = performance.now();
    // Through a promise, so a handler that throws synchronously is answered like any other error.
    Promise.resolve()
      .then(() => route.handler(ctx))
      .then((out) => {
        if (!res.headersSent) sendJson(res, route.status ?? 200, out);
        rlog.info(
          {
            method: req.method,
            path: url.pathname,
            status: res.statusCode,
            ms: Math.round(performance.now() - t0),
          },
          'request',
        );
      })
      .catch(fail);
  };
}
