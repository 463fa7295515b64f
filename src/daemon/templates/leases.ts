/**
 * What template builds in progress hold, for template garbage collection (gc.ts). A build
 * leases each template and snapshot it finds (its parent, the cached layers it restores, the
 * running state it reuses, the layers it makes) in the same synchronous stretch as finding it;
 * the collector checks the leases in the same synchronous stretch as its removal transaction,
 * so either the build finds the thing gone (a cache miss, or a parent made again) or the
 * collector keeps it. Until a build has its parent (turning an OCI image into a template can
 * take minutes, and the template it makes is new), every hidden template counts as held.
 *
 * In memory only: no build outlives kilnd (start-up fails the ones a dead kilnd left). Each
 * lease records a use of its snapshots when taken and when released, so the grace period of
 * what a build used starts when the build ends.
 */

/** One build's lease. */
export interface BuildLease {
  /** Holds these template and snapshot ids (null/undefined are skipped). */
  hold(...ids: (string | null | undefined)[]): void;
  /** The build has its parent template (held): hidden templates no longer count as held for it. */
  resolved(): void;
  /** The build ended: everything it held is free (and counted as used now). */
  release(): void;
}

export class BuildLeases {
  readonly #held = new Map<string, Set<string>>();
  readonly #resolving = new Set<string>();
  readonly #used: (ids: string[]) => void;

  /** `used(ids)` records a use of those ids now (the store skips ids that are no snapshot). */
  constructor(used: (ids: string[]) => void = () => undefined) {
    this.#used = used;
  }

  /** A lease for build `buildId`, which starts without its parent. */
  begin(buildId: string): BuildLease {
    const ids = new Set<string>();
    this.#held.set(buildId, ids);
    this.#resolving.add(buildId);
    return {
      hold: (...more) => {
        const fresh = more.filter((x): x is string => typeof x === 'string' && x !== '');
        for (const id of fresh) ids.add(id);
        this.#used(fresh);
      },
      resolved: () => {
        this.#resolving.delete(buildId);
      },
      release: () => {
        this.#held.delete(buildId);
        this.#resolving.delete(buildId);
        this.#used([...ids]);
      },
    };
  }

  /** Whether a build in progress holds this template or snapshot id. */
  holds(id: string): boolean {
    for (const ids of this.#held.values()) if (ids.has(id)) return true;
    return false;
  }

  /** Whether a build in progress is still finding its parent template. */
  resolving(): boolean {
    return this.#resolving.size > 0;
  }
}
