/**
 * Retention: the records of ended (`dead`) sandboxes, their events and finished journal entries
 * are kept for a while (for `kiln sandbox list --all`, logs, post-mortems) and then purged, so
 * the state database does not grow with every sandbox ever made. A dead sandbox that a snapshot
 * was taken from stays while that snapshot exists (the store's `purgeEnded` checks it).
 */
import { invalidArgument } from '../../core/errors.ts';
import type { PurgeResult, Store } from '../../store/store.ts';

/** KILN_RETENTION_S's default: ended records are kept for 7 days. */
export const DEFAULT_RETENTION_S = 7 * 24 * 3600;

/**
 * Purges what ended more than `retentionMs` before `now()` and says what went. Cheap when there
 * is nothing to purge (one indexed query); run it at start-up and then periodically (hourly is
 * plenty: the period only bounds how long past its retention a record may linger).
 */
export function purgeEndedRecords(store: Store, now: () => number, retentionMs: number): PurgeResult {
  if (!Number.isFinite(retentionMs) || retentionMs < 0)
    throw invalidArgument('retentionMs', `must be a number >= 0, got ${retentionMs}`);
  return store.purgeEnded(new Date(now() - retentionMs).toISOString());
}
