import { KilnError } from '../../core/errors.ts';
import { isLoopbackHost } from './reference.ts';

/** One `WWW-Authenticate` challenge: its scheme (lower-case) and parameters. */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Credentials for a registry (basic auth, or exchanged for a bearer token). */
export interface RegistryCredentials {
  username: string;
  password: string;
}

/**
 * Parses a `WWW-Authenticate` header value (RFC 7235): `Bearer realm="…",service="…",scope="…"`,
 * possibly several challenges, quoted strings with backslash escapes or bare tokens.
 */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  const re = /\s*([A-Za-z0-9!#$%&'*+.^_`|~-]+)(?:\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*)))?\s*,?/gy;
  let cur: Challenge | undefined;
  let m: RegExpExecArray | null;
  while (re.lastIndex < header.length && (m = re.exec(header)) !== null) {
    const [, name, quoted, bare] = m;
    if (!name) break;
    if (quoted === undefined && bare === undefined) {
      cur = { scheme: name.toLowerCase(), params: {} };
      out.push(cur);
    } else if (cur) {
      cur.params[name.toLowerCase()] = quoted !== undefined ? quoted.replace(/\\(.)/g, '$1') : (bare ?? '');
    }
    if (m[0].length === 0) break;
  }
  return out;
}

export interface AuthOpts {
  /** `scheme://host[:port]` of the registry that challenged. */
  registryOrigin: string;
  /** The token scope to ask for when the challenge names none. */
  scope: string;
  credentials?: RegistryCredentials | undefined;
  signal?: AbortSignal | undefined;
}

const basic = (c: RegistryCredentials): string =>
  `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;

/**
 * Answers a 401's challenges: the `Authorization` header value to retry with. Bearer: asks the
 * token endpoint (`realm`, with `service` and `scope`), anonymously or with basic credentials;
 * Basic: the credentials themselves. The realm must be HTTPS unless it is on loopback or on the
 * registry's own (configured insecure) origin, so credentials never travel in clear text to a
 * host the user did not name.
 */
export async function authorize(challenges: Challenge[], o: AuthOpts): Promise<string> {
  const bearer = challenges.find((c) => c.scheme === 'bearer');
  if (bearer) return bearerToken(bearer, o);
  if (challenges.some((c) => c.scheme === 'basic')) {
    if (!o.credentials) throw pullError(`the registry ${o.registryOrigin} wants credentials (basic auth)`);
    return basic(o.credentials);
  }
  throw pullError(
    `the registry ${o.registryOrigin} asks for an unsupported authentication (${challenges.map((c) => c.scheme).join(', ') || 'none named'})`,
  );
}

async function bearerToken(c: Challenge, o: AuthOpts): Promise<string> {
  const realm = c.params.realm;
  let url: URL;
  try {
    url = new URL(realm ?? '');
  } catch {
    throw pullError(`the registry's token challenge names no valid realm (${JSON.stringify(realm)})`);
  }
  const sameOrigin = url.origin === o.registryOrigin;
  if (
    url.protocol !== 'https:' &&
    !(url.protocol === 'http:' && (isLoopbackHost(url.hostname) || sameOrigin))
  )
    throw pullError(`refusing the token realm ${url.origin}: it is not HTTPS`);
  if (c.params.service) url.searchParams.set('service', c.params.service);
  url.searchParams.set('scope', c.params.scope ?? o.scope);
  const headers: Record<string, string> = {};
  if (o.credentials) headers.authorization = basic(o.credentials);
  const res = await fetch(url, { headers, signal: o.signal ?? null, redirect: 'error' }).catch(
    (e: unknown) => {
      throw pullError(`cannot reach the token endpoint ${url.origin}: ${(e as Error).message}`);
    },
  );
  const text = await res.text();
  if (!res.ok)
    throw pullError(
      `the token endpoint ${url.origin} answered ${res.status}${res.status === 401 ? ' (wrong or missing credentials)' : ''}`,
    );
  let token: unknown;
  try {
    const body = JSON.parse(text) as { token?: unknown; access_token?: unknown };
    token = body.token ?? body.access_token;
  } catch {
    // handled below
  }
  if (typeof token !== 'string' || token.length === 0)
    throw pullError(`the token endpoint ${url.origin} answered no token`);
  return `Bearer ${token}`;
}

/** A failed pull: `image_build_failed` with a message starting "pull:". */
export const pullError = (message: string, cause?: unknown): KilnError =>
  new KilnError('image_build_failed', `pull: ${message}`, cause === undefined ? {} : { cause });
