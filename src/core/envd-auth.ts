/**
 * Facts of the envd contract that both the guest agent (which serves it) and the daemon (which
 * routes to it) need: the version kiln's agent implements and the signature on `/files` URLs.
 */
import { createHash, timingSafeEqual } from 'node:crypto';

/** The envd version kiln's agent implements; >= 0.6.4 turns on every e2b SDK feature. */
export const ENVD_VERSION = '0.6.13';

/** Constant-time string comparison. */
export function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * The signature E2B's SDK puts on `/files` URLs: "v1_" + unpadded base64 of
 * sha256("path:operation:username:token[:expiration]").
 */
export function fileSignature(
  path: string,
  operation: 'read' | 'write',
  username: string,
  token: string,
  expiration?: number,
): string {
  const raw = `${path}:${operation}:${username}:${token}${expiration === undefined ? '' : `:${expiration}`}`;
  return 'v1_' + createHash('sha256').update(raw).digest('base64').replace(/=+$/, '');
}
