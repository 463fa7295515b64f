/**
 * A template build's layer cache: the key of every step's layer, and how deep the cache reaches
 * (the deepest cached layer before the first miss or forced step is where the builder starts).
 */
import type { SnapshotRecord, TemplateRecord } from '../../core/domain.ts';
import { KilnError } from '../../core/errors.ts';
import {
  changesVm,
  finalKey,
  layerKey,
  layerName,
  rootLayerKey,
  templateSnapName,
  type BuildSpec,
} from '../../core/template-steps.ts';
import type { SandboxService } from '../sandbox-service.ts';
import type { BuildLease } from './leases.ts';

/** A live layer snapshot by key (or a template's running state by name), if the cache holds it. */
export function findLayer(
  svc: SandboxService,
  key: string,
  name = layerName(key),
): SnapshotRecord | undefined {
  try {
    const s = svc.getSnapshot(name);
    return s.deletedAt === null ? s : undefined;
  } catch (e) {
    if (e instanceof KilnError && e.code === 'not_found') return undefined;
    throw e;
  }
}

/** How far the cache reaches: the layer keys, the first step to run, and what to restore. */
export interface CachePlan {
  keys: string[];
  /** The name of the template's running-state snapshot for exactly this definition. */
  finalName: string;
  firstRun: number;
  restoreFrom: string;
  layers: string[];
}

/** The deepest cached layer: the cache holds every VM-changing step before the first miss or forced step. */
export function planCache(
  svc: SandboxService,
  parent: TemplateRecord,
  spec: BuildSpec,
  templateId: string,
  lease: BuildLease,
): CachePlan {
  const keys: string[] = [];
  let key = rootLayerKey(parent.snapshotId ?? '');
  for (const s of spec.steps) keys.push((key = layerKey(key, s)));
  const plan: CachePlan = {
    keys,
    finalName: templateSnapName(finalKey(templateId, key, spec.startCmd, spec.readyCmd)),
    firstRun: spec.steps.length,
    restoreFrom: parent.name,
    layers: [],
  };
  for (const [i, s] of spec.steps.entries()) {
    if (spec.force || s.force) return { ...plan, firstRun: i };
    if (!changesVm(s)) continue;
    const hit = findLayer(svc, keys[i] ?? '');
    if (!hit) return { ...plan, firstRun: i };
    lease.hold(hit.id);
    plan.restoreFrom = hit.id;
    plan.layers.push(hit.id);
  }
  return plan;
}
