import type { IncomingMessage, ServerResponse } from 'node:http';
import { ENVD_VERSION } from '../core/envd-auth.ts';
import { refuse, type AgentAuth } from './agent-auth.ts';
import type { ClockSetter, EntropyResult } from './clock.ts';
import { readBody, sendError } from './http-util.ts';
import type { AgentState } from './state.ts';
import { lookupUser } from './users.ts';

interface InitBody {
  envVars?: Record<string, string>;
  accessToken?: string;
  defaultUser?: string;
  defaultWorkdir?: string;
  timestamp?: string;
  /** kiln's: fresh randomness from the host (base64), for the kernel's pool. Never logged. */
  entropySeed?: string;
}

export interface InitDeps {
  state: AgentState;
  auth: AgentAuth;
  /** Sets the guest clock and reseeds the kernel's CRNG (inside a VM only). */
  clock: ClockSetter | undefined;
  log: (line: string) => void;
}

/**
 * POST /init: the host hands over the access token, env vars, default user and workdir, and its
 * time, and a fresh entropy seed. Needs the token the agent holds (at first the bootstrap token).
 * A replay (an older timestamp than the last applied) is ignored. The seed is in the kernel's
 * pool and the CRNG re-keyed before the answer (header `x-kiln-entropy` says how it went), so
 * nothing in the guest reads the snapshot's shared CRNG state after kilnd's /init returns.
 */
export async function handleInit(req: IncomingMessage, res: ServerResponse, d: InitDeps): Promise<void> {
  if (d.auth.locked() && !d.auth.tokenOk(req)) {
    refuse(req, res, false);
    return;
  }
  let body: InitBody;
  let seed: Buffer | undefined;
  try {
    body = await readInitBody(req);
    seed = entropySeed(body.entropySeed);
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
  // Both go to the clock helper at once (it answers in order): one wake-up of it, not two.
  const [entropy, clockSet] = await Promise.all([
    seed ? reseed(seed, d) : undefined,
    Number.isFinite(ts) ? takeHostTime(ts, d) : undefined,
  ]);
  applyInit(d.state, body);
  res.writeHead(204, { 'x-envd-version': ENVD_VERSION, ...(entropy ? { 'x-kiln-entropy': entropy } : {}) });
  res.end();
  // After the answer: the agent's log is the serial console, slow to write under TCG.
  if (clockSet) d.log(clockSet);
}

/** The seed's bytes: base64 of 32 to 256 bytes (the message never quotes it). */
function entropySeed(v: unknown): Buffer | undefined {
  if (v === undefined) return undefined;
  const b = typeof v === 'string' && /^[A-Za-z0-9+/]*={0,2}$/.test(v) ? Buffer.from(v, 'base64') : undefined;
  if (!b || b.length < 32 || b.length > 256)
    throw new TypeError('entropySeed must be base64 of 32 to 256 bytes');
  return b;
}

/** Mixes the host's seed into the kernel's pool and re-keys the CRNG (inside a VM only). */
async function reseed(seed: Buffer, d: InitDeps): Promise<EntropyResult | 'unavailable'> {
  if (!d.clock) return 'unavailable';
  const how = await d.clock.reseed(seed);
  if (how !== 'reseeded') d.log(`entropy seed from /init: ${how}, the CRNG was not reseeded`);
  return how;
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

/**
 * Records the host's time and, when the guest's clock is off, sets it; says how, for the log
 * (undefined: it was not off).
 */
async function takeHostTime(ts: number, d: InitDeps): Promise<string | undefined> {
  d.state.lastInitMs = ts;
  const skew = Date.now() - ts;
  // A restored snapshot wakes with the clock it was saved with: set it from the host's.
  if (!d.clock || (skew >= -50 && skew <= 5000)) return undefined;
  const how = await d.clock.set(ts);
  return `clock set from /init by ${how} (was ${skew} ms off)`;
}
