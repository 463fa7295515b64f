/**
 * Which sandbox and guest port a request to the envd proxy is for, and whether it may reach a
 * published port. E2B's client proxy routes the same two ways: a Host of the form
 * `{port}-{sandboxId}.{domain}` (what `sandbox.getHost(port)` builds), or the headers
 * `E2b-Sandbox-Id` + `E2b-Sandbox-Port` (what the SDK sends to one shared sandbox URL).
 */
import type { IncomingHttpHeaders } from 'node:http';
import { safeEqual } from '../core/envd-auth.ts';
import { GUEST_AGENT_PORT } from '../core/validate.ts';

/** The header E2B's proxy reads a sandbox's traffic access token from. */
export const TRAFFIC_TOKEN_HEADER = 'e2b-traffic-access-token';

/**
 * Where a request goes: the guest agent (envd: the routes the SDK calls; `id` undefined when
 * nothing names a sandbox), a published guest port, or nowhere (`status` and why).
 */
export type ProxyTarget =
  | { kind: 'envd'; id: string | undefined }
  | { kind: 'port'; id: string; port: number }
  | { kind: 'bad'; status: number; message: string };

/** `{port}-{sandboxId}.` at the start of a Host (any domain after the dot, any :port). */
const HOST_FORM = /^(\d{1,5})-([a-z0-9][a-z0-9_-]*)\./i;

function portOf(raw: string, what: string): number | string {
  const n = /^\d{1,5}$/.test(raw) ? Number(raw) : NaN;
  return Number.isInteger(n) && n >= 1 && n <= 65535
    ? n
    : `${what} must be a TCP port (1-65535), got "${raw.slice(0, 64)}"`;
}

function header(h: IncomingHttpHeaders, name: string): string | undefined {
  const v = h[name];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/**
 * The target of a request from its Host and headers. A Host in the `{port}-{id}.` form wins
 * (as at E2B, where the headers count only on the shared sandbox host); port 49983 is the
 * agent's, i.e. the envd routes, either way.
 */
export function targetOf(h: IncomingHttpHeaders): ProxyTarget {
  const m = HOST_FORM.exec(h.host ?? '');
  if (m?.[1] && m[2]) {
    const port = portOf(m[1], 'the port in the Host');
    if (typeof port === 'string') return { kind: 'bad', status: 400, message: port };
    const id = m[2].toLowerCase();
    return port === GUEST_AGENT_PORT ? { kind: 'envd', id } : { kind: 'port', id, port };
  }
  const id = header(h, 'e2b-sandbox-id');
  const rawPort = header(h, 'e2b-sandbox-port');
  if (id === undefined || rawPort === undefined) return { kind: 'envd', id };
  const port = portOf(rawPort.trim(), 'E2b-Sandbox-Port');
  if (typeof port === 'string') return { kind: 'bad', status: 400, message: port };
  return port === GUEST_AGENT_PORT ? { kind: 'envd', id } : { kind: 'port', id, port };
}

/** Who may reach a sandbox's published ports (E2B's `allowPublicTraffic`, `maskRequestHost`). */
export interface TrafficPolicy {
  allowPublicTraffic: boolean;
  /** The sandbox's traffic access token (null: none was made, so no request carries it). */
  token: string | null;
  /** The Host header sent to the guest instead of the client's (`${PORT}` = the guest port). */
  maskRequestHost?: string;
}

export const PUBLIC_TRAFFIC: TrafficPolicy = { allowPublicTraffic: true, token: null };

/** E2B's answer when a secured sandbox's port is asked without its token (or a wrong one). */
export function trafficRefusal(
  policy: TrafficPolicy,
  h: IncomingHttpHeaders,
  sandboxId: string,
): { status: 403; body: { sandboxId: string; message: string; code: 403 } } | undefined {
  if (policy.allowPublicTraffic) return undefined;
  const given = header(h, TRAFFIC_TOKEN_HEADER);
  if (given !== undefined && policy.token !== null && safeEqual(given, policy.token)) return undefined;
  const message =
    given === undefined
      ? `Sandbox is secured with traffic access token. Token header '${TRAFFIC_TOKEN_HEADER}' is missing`
      : `Sandbox is secured with traffic access token. Provided token in header '${TRAFFIC_TOKEN_HEADER}' is invalid`;
  return { status: 403, body: { sandboxId, message, code: 403 } };
}

/** The Host the guest sees: the mask (with `${PORT}` replaced) or the client's own. */
export function guestHost(policy: TrafficPolicy, port: number, clientHost: string | undefined): string {
  if (policy.maskRequestHost) return policy.maskRequestHost.replaceAll('${PORT}', String(port));
  return clientHost ?? `localhost:${port}`;
}

/** E2B's answer for a published port nothing in the sandbox listens on. */
export function portClosedBody(
  sandboxId: string,
  port: number,
): { sandboxId: string; message: string; port: number; code: 502 } {
  return { sandboxId, message: 'The sandbox is running but port is not open', port, code: 502 };
}
