import type { IncomingMessage, ServerResponse } from 'node:http';
import { fileSignature, safeEqual, tokenSha256 } from '../core/envd-auth.ts';
import { sendError, sendJson } from './http-util.ts';
import type { AgentState } from './state.ts';

export const UNAUTHORIZED =
  'unauthorized access, please provide a valid access token or method signing if supported';

/**
 * Who may talk to the agent: the holder of the access token (`X-Access-Token`), or before the
 * first `/init` the holder of the bootstrap token; `/files` also takes a signed URL.
 */
export class AgentAuth {
  readonly #state: AgentState;
  constructor(state: AgentState) {
    this.#state = state;
  }

  /** Whether requests need a token at all (false only before a test's first /init). */
  locked(): boolean {
    return this.#state.accessToken !== undefined || this.#state.bootstrapTokenSha256 !== undefined;
  }

  tokenOk(req: IncomingMessage): boolean {
    const h = req.headers['x-access-token'];
    const { accessToken, bootstrapTokenSha256 } = this.#state;
    if (accessToken !== undefined) return typeof h === 'string' && safeEqual(h, accessToken);
    if (bootstrapTokenSha256 !== undefined)
      return typeof h === 'string' && safeEqual(tokenSha256(h), bootstrapTokenSha256);
    return true;
  }

  /**
   * Why a /files request is refused, or undefined when allowed: it carries the access token
   * header, or a signed URL (E2B SDK's uploadUrl/downloadUrl).
   */
  filesDenied(req: IncomingMessage, q: URLSearchParams, op: 'read' | 'write'): string | undefined {
    if (!this.locked()) return undefined;
    if (req.headers['x-access-token'] !== undefined) return this.tokenOk(req) ? undefined : UNAUTHORIZED;
    // Before its first /init the agent only knows the bootstrap token's hash: no signed URLs.
    const token = this.#state.accessToken;
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
  }
}

/** A refusal closes the connection: a client without the token gets nothing kept open. */
export function refuse(
  req: IncomingMessage,
  res: ServerResponse,
  rpc: boolean,
  message = UNAUTHORIZED,
): void {
  req.resume();
  res.shouldKeepAlive = false;
  if (rpc) sendJson(res, 401, { code: 'unauthenticated', message });
  else sendError(res, 401, message);
}
