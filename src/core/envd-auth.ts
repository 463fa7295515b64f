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

/**
 * The kernel command line word that hands a freshly booted guest agent the SHA-256 (hex) of its
 * bootstrap token: until a request presents that token the agent answers nothing but `/health`.
 * Only the hash travels (QEMU's command line is visible to every local user); kilnd keeps the
 * token with the template and presents it in each sandbox's `/init`, which replaces it.
 */
export const BOOTSTRAP_KERNEL_ARG = 'kiln.token_sha256';

/** SHA-256 (hex) of a token, as the agent compares bootstrap tokens. */
export function tokenSha256(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/** The bootstrap token hash on a kernel command line (`/proc/cmdline`), or undefined. */
export function bootstrapHashFromCmdline(cmdline: string): string | undefined {
  for (const w of cmdline.trim().split(/\s+/)) {
    const [k, v] = [w.slice(0, w.indexOf('=')), w.slice(w.indexOf('=') + 1)];
    if (w.includes('=') && k === BOOTSTRAP_KERNEL_ARG && /^[0-9a-f]{64}$/.test(v)) return v;
  }
  return undefined;
}
