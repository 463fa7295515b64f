import type { IncomingMessage, ServerResponse } from 'node:http';
import { ENVD_VERSION } from '../core/envd-auth.ts';
import { refuse, type AgentAuth } from './agent-auth.ts';
import type { ClockSetter } from './clock.ts';
import { readBody, sendError } from './http-util.ts';
import type { AgentState } from './state.ts';
import { lookupUser } from './users.ts';

interface InitBody {
  envVars?: Record<string, string>;
  accessToken?: string;
  defaultUser?: string;
  defaultWorkdir?: string;
  timestamp?: string;
}

export interface InitDeps {
  state: AgentState;
  auth: AgentAuth;
  /** Sets the guest clock (inside a VM only). */
  clock: ClockSetter | undefined;
  log: (line: string) => void;
}

/**
 * POST /init: the host hands over the access token, env vars, default user and workdir, and its
 * time. Needs the token the agent holds (at first the bootstrap token). A replay (an older
 * timestamp than the last applied) is ignored.
 */
export async function handleInit(req: IncomingMessage, res: ServerResponse, d: InitDeps): Promise<void> {
  if (d.auth.locked() && !d.auth.tokenOk(req)) {
    refuse(req, res, false);
    return;
  }
  let body: InitBody;
  try {
    body = await readInitBody(req);
  } catch (e) {
    sendError(res, 400, `invalid /init body: ${(e as Error).message}`);
    return;
  }
  const ts = body.timestamp ? Date.parse(body.timestamp) : NaN;
  if (Number.isFinite(ts) && ts < d.state.lastInitMs) {
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
  }
  applyInit(d.state, body);
  if (Number.isFinite(ts)) await takeHostTime(ts, d);
  res.writeHead(204, { 'x-envd-version': ENVD_VERSION }).end();
}

async function readInitBody(req: IncomingMessage): Promise<InitBody> {
  const raw = await readBody(req);
  const parsed: unknown = raw.length ? JSON.parse(raw.toString('utf8')) : {};
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new TypeError('body must be a JSON object');
  return parsed;
}

function applyInit(state: AgentState, body: InitBody): void {
  if (body.defaultUser) state.defaultUser = body.defaultUser;
  if (body.envVars && typeof body.envVars === 'object') state.envVars = { ...body.envVars };
  // A token, once held, is only ever replaced: an /init without one keeps the current one.
  if (typeof body.accessToken === 'string' && body.accessToken !== '') {
    state.accessToken = body.accessToken;
    state.bootstrapTokenSha256 = undefined;
  }
  if (body.defaultWorkdir) state.defaultWorkdir = body.defaultWorkdir;
}

/** Records the host's time and, when the guest's clock is off, sets it. */
async function takeHostTime(ts: number, d: InitDeps): Promise<void> {
  d.state.lastInitMs = ts;
  const skew = Date.now() - ts;
  // A restored snapshot wakes with the clock it was saved with: set it from the host's.
  if (d.clock && (skew < -50 || skew > 5000)) {
    const how = await d.clock.set(ts);
    d.log(`clock set from /init by ${how} (was ${skew} ms off)`);
  }
}
