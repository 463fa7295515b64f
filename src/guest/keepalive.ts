import type { HandlerContext } from '@connectrpc/connect';

/** envd's keepalive default when the client names no interval (seconds). */
const DEFAULT_KEEPALIVE_S = 90;

/** A server stream's keepalive interval: the client's `Keepalive-Ping-Interval` (s), else envd's default. */
export function keepaliveMs(ctx: HandlerContext): number {
  const s = Number(ctx.requestHeader.get('keepalive-ping-interval'));
  return (Number.isFinite(s) && s > 0 ? s : DEFAULT_KEEPALIVE_S) * 1000;
}
