import { createHash, timingSafeEqual } from 'node:crypto';

/** What `/init` configures; kept in memory (a restored snapshot gets a fresh `/init`). */
export interface AgentState {
  accessToken: string | undefined;
  envVars: Record<string, string>;
  defaultUser: string;
  defaultWorkdir: string | undefined;
  /** Last applied /init timestamp (ms), to ignore replays. */
  lastInitMs: number;
}

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
