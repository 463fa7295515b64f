/**
 * The native API's template garbage collection bodies (POST /v1/templates/gc), re-exported by
 * api-types.ts with the others and checked against docs/openapi.json the same way.
 */
import type { Fields } from './api-types.ts';

/** POST /v1/templates/gc: a dry run (nothing changes) and the grace period for this run. */
export interface TemplateGcRequest {
  dryRun?: boolean;
  /** Seconds without use before a hidden template or layer may go (default KILN_TEMPLATE_GC_AFTER_S). */
  graceS?: number;
}
export const TEMPLATE_GC_FIELDS = {
  dryRun: true,
  graceS: true,
} as const satisfies Fields<TemplateGcRequest>;

/** One hidden template or snapshot template garbage collection removed (or would) or kept. */
export interface TemplateGcItemView {
  /** `template`: a hidden template with its snapshot (if any); `snapshot`: a layer or template snapshot alone. */
  kind: 'template' | 'snapshot';
  templateId: string | null;
  snapshotId: string | null;
  name: string | null;
  /** Bytes of its snapshot's files. */
  bytes: number;
  /** When it was last used: made, found by a build, stood on (ISO time). */
  lastUsedAt: string;
  /** Why it stays (kept ones); null for removed ones. */
  reason: string | null;
}
export const TEMPLATE_GC_ITEM_VIEW_FIELDS = {
  kind: true,
  templateId: true,
  snapshotId: true,
  name: true,
  bytes: true,
  lastUsedAt: true,
  reason: true,
} as const satisfies Fields<TemplateGcItemView>;

/** What one template garbage collection removed (a dry run: would remove) and kept. */
export interface TemplateGcView {
  dryRun: boolean;
  graceS: number;
  removed: TemplateGcItemView[];
  kept: TemplateGcItemView[];
  /** Bytes of the removed snapshots' files. */
  freedBytes: number;
}
export const TEMPLATE_GC_VIEW_FIELDS = {
  dryRun: true,
  graceS: true,
  removed: true,
  kept: true,
  freedBytes: true,
} as const satisfies Fields<TemplateGcView>;
