/** The native API's template build answers, as the SDK returns them. */

export type { TemplateGcItemView, TemplateGcRequest, TemplateGcView } from '../core/api-types.ts';

/** POST /v1/template-builds. */
export interface TemplateBuildRequest {
  name: string;
  fromTemplate?: string;
  fromImage?: string;
  /** E2B's GeneralRegistry: credentials for the registry of `fromImage` (never stored by kilnd). */
  fromImageRegistry?: { type: 'registry'; username: string; password: string };
  steps: { type: string; args?: string[]; filesHash?: string; force?: boolean }[];
  startCmd?: string;
  readyCmd?: string;
  force?: boolean;
  memoryMiB?: number;
  vcpus?: number;
}

export interface TemplateBuildView {
  id: string;
  templateId: string;
  name: string;
  status: 'building' | 'ready' | 'error';
  reason: { message: string; step?: string } | null;
  snapshotId: string | null;
  createdAt: string;
  finishedAt: string | null;
}

export interface BuildLogLine {
  timestamp: string;
  level: string;
  message: string;
  step?: string;
}

export interface TemplateDetailView {
  id: string;
  name: string;
  snapshotId: string | null;
  memoryMiB: number | null;
  vcpus: number | null;
  builds: TemplateBuildView[];
}
