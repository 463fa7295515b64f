/**
 * Where a guest reaches its volumes (shared by the namespace rules in src/net and the daemon's
 * mount command): the volume mounted at index `i` is `VOLUME_GUEST_ADDR:VOLUME_GUEST_PORT + i`,
 * fixed, so a paused or restored guest finds it again from whatever network slot it lands in.
 * TEST-NET-1 (RFC 5737): never a real destination.
 */
export const VOLUME_GUEST_ADDR = '192.0.2.1';
export const VOLUME_GUEST_PORT = 20490;
/** Volumes one sandbox may mount (one guest port each). */
export const MAX_VOLUME_MOUNTS = 8;
