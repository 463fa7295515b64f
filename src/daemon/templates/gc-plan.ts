/**
 * What template garbage collection removes (gc.ts runs it): a pure decision over the records.
 *
 * Candidates are what kiln made for itself and nobody names: hidden templates (`kiln-img-*`,
 * `kiln-res-*`, `kiln-deleted-*`) with their snapshot, and live snapshots no template points at
 * that are layers (`kiln-layer-*`), templates' running states (`kiln-tpl-*`) or templates' own
 * boots (kind `template`, e.g. what a rebuilt `base` left). A candidate is kept when
 * - it is in a visible template's build chain: that template's snapshot and every layer under
 *   it, the layers of its current build, and the template owning the chain's root;
 * - a build in progress holds it (leases.ts), or it is a hidden template while a build is still
 *   finding its parent;
 * - a sandbox (not dead) or a warm pool member stands on it, or a snapshot is layered on it
 *   that stays (a layer whose children all go, goes with them: leaves first);
 * - it was used (made, found by a build, stood on) less than the grace period ago;
 * - it is a deleted template's record with no files that sandbox records still name.
 * User snapshots, and snapshots users deleted (sandbox/gc.ts reclaims those), are never candidates.
 */
import type { TemplateGcItemView } from '../../core/template-gc-types.ts';
import type { SnapshotRecord, TemplateBuildRecord, TemplateRecord } from '../../core/domain.ts';
import { isHiddenTemplateName, isInternalSnapshotName } from '../../core/template-steps.ts';

/** One thing the collector removes or keeps (the API's item without its reason). */
export type GcUnit = Omit<TemplateGcItemView, 'reason'>;

/** The records and facts one decision reads. */
export interface GcWorld {
  templates: TemplateRecord[];
  snapshots: SnapshotRecord[];
  builds: TemplateBuildRecord[];
  /** Snapshot id -> its last recorded use. */
  uses: Map<string, string>;
  /** Child snapshots and live sandboxes / warm pool members on a snapshot. */
  dependents: (snapshotId: string) => { snapshots: string[]; sandboxes: string[] };
  /** Whether sandbox records (dead ones too) name the template. */
  named: (templateId: string) => boolean;
  /** Whether a build in progress holds the id. */
  held: (id: string) => boolean;
  /** Whether a build in progress is still finding its parent. */
  resolving: boolean;
  now: number;
  graceMs: number;
}

export interface GcPlan {
  /** In removal order: layers before what they sit on. */
  remove: GcUnit[];
  kept: (GcUnit & { reason: string })[];
  /** Kept because something uses it now (its use is recorded by a real run). */
  inUse: string[];
}

/** Snapshot id -> the visible template whose build chain holds it (and template ids the same). */
function buildChains(w: GcWorld, byId: Map<string, SnapshotRecord>): Map<string, string> {
  const chain = new Map<string, string>();
  const owner = new Map(w.templates.filter((t) => t.snapshotId).map((t) => [t.snapshotId ?? '', t]));
  const walk = (from: string | null, name: string): void => {
    for (let id = from; id !== null && !chain.has(id); id = byId.get(id)?.parentId ?? null) {
      chain.set(id, name);
      const t = owner.get(id);
      if (t) chain.set(t.id, name);
    }
  };
  for (const t of w.templates) {
    if (isHiddenTemplateName(t.name) || !t.snapshotId) continue;
    walk(t.snapshotId, t.name);
    const current = w.builds.find((b) => b.templateId === t.id && b.snapshotId === t.snapshotId);
    for (const l of current?.layers ?? []) walk(l, t.name);
  }
  return chain;
}

const bytesOf = (s: SnapshotRecord | undefined): number =>
  s ? s.artifacts.reduce((n, a) => n + a.size, 0) : 0;

/** Every candidate (see the top of this file). */
function candidates(w: GcWorld, byId: Map<string, SnapshotRecord>): GcUnit[] {
  const owned = new Set(w.templates.map((t) => t.snapshotId));
  const lastUse = (s: SnapshotRecord | undefined, made: string): string => {
    const u = s ? w.uses.get(s.id) : undefined;
    const c = s?.createdAt ?? made;
    return u !== undefined && u > c ? u : c;
  };
  const units: GcUnit[] = [];
  for (const t of w.templates) {
    if (!isHiddenTemplateName(t.name)) continue;
    const s = t.snapshotId ? byId.get(t.snapshotId) : undefined;
    const [snapshotId, bytes] = [t.snapshotId, bytesOf(s)];
    units.push({
      kind: 'template',
      templateId: t.id,
      snapshotId,
      name: t.name,
      bytes,
      lastUsedAt: lastUse(s, t.createdAt),
    });
  }
  for (const s of w.snapshots) {
    if (s.deletedAt !== null || owned.has(s.id)) continue;
    if (!isInternalSnapshotName(s.name) && s.kind !== 'template') continue;
    const u = { kind: 'snapshot' as const, templateId: null, snapshotId: s.id, name: s.name };
    units.push({ ...u, bytes: bytesOf(s), lastUsedAt: lastUse(s, s.createdAt) });
  }
  return units;
}

/** Why `u` must stay whatever happens to the other candidates, or undefined. */
function keepReason(
  w: GcWorld,
  u: GcUnit,
  chain: Map<string, string>,
): { why: string; use: boolean } | undefined {
  const ids = [u.templateId, u.snapshotId].filter((x): x is string => x !== null);
  const inChain = ids.map((id) => chain.get(id)).find((x) => x !== undefined);
  if (inChain !== undefined) return { why: `in the build chain of template "${inChain}"`, use: true };
  if (ids.some((id) => w.held(id))) return { why: 'held by a template build in progress', use: true };
  if (u.kind === 'template' && w.resolving)
    return { why: 'a template build in progress is finding its parent', use: false };
  const on = u.snapshotId ? w.dependents(u.snapshotId).sandboxes : [];
  if (on.length) return { why: `in use by ${on.join(', ')}`, use: true };
  const idle = w.now - Date.parse(u.lastUsedAt);
  if (idle < w.graceMs)
    return {
      why: `used ${Math.round(idle / 1000)} s ago (grace ${Math.round(w.graceMs / 1000)} s)`,
      use: false,
    };
  if (u.kind === 'template' && u.snapshotId === null && u.templateId && w.named(u.templateId))
    return { why: 'sandbox records still name it', use: false };
  return undefined;
}

/** The decision: what goes (leaves first), what stays and why. */
export function planCollection(w: GcWorld): GcPlan {
  const byId = new Map(w.snapshots.map((s) => [s.id, s]));
  const chain = buildChains(w, byId);
  const plan: GcPlan = { remove: [], kept: [], inUse: [] };
  let free: GcUnit[] = [];
  for (const u of candidates(w, byId)) {
    const k = keepReason(w, u, chain);
    if (!k) free.push(u);
    else {
      plan.kept.push({ ...u, reason: k.why });
      if (k.use && u.snapshotId) plan.inUse.push(u.snapshotId);
    }
  }
  // A snapshot layered on a candidate keeps it unless that snapshot goes too.
  for (let changed = true; changed;) {
    changed = false;
    const going = new Set(free.map((u) => u.snapshotId));
    const next: GcUnit[] = [];
    for (const u of free) {
      const stays = u.snapshotId
        ? w.dependents(u.snapshotId).snapshots.find((c) => !going.has(c))
        : undefined;
      if (stays === undefined) next.push(u);
      else {
        plan.kept.push({ ...u, reason: `snapshot ${stays}, which stays, is layered on it` });
        changed = true;
      }
    }
    free = next;
  }
  const depth = (id: string | null): number => {
    let n = 0;
    for (let s = id ? byId.get(id) : undefined; s?.parentId; s = byId.get(s.parentId)) n++;
    return n;
  };
  plan.remove = free.sort((a, b) => depth(b.snapshotId) - depth(a.snapshotId));
  return plan;
}
