/** The dashboard's JSON views of daemon records (shapes: core/dashboard-types.ts). */
import type {
  DashKey,
  DashSample,
  DashSandbox,
  DashSnapshot,
  DashTemplate,
} from '../../core/dashboard-types.ts';
import type { ApiKeyRecord, SandboxRecord, SnapshotRecord, TemplateBuildRecord } from '../../core/domain.ts';
import type { SandboxService, SandboxStats } from '../../daemon/sandbox-service.ts';
import type { TemplateView } from '../../daemon/templates/build-service.ts';

/** Samples in the table's sparklines: the last five minutes. */
export const RECENT_SAMPLES = 60;

export const sampleView = (s: SandboxStats): DashSample => ({
  t: Date.parse(s.at),
  cpu: s.cpuPct,
  mem: s.rssBytes,
  disk: s.diskBytes,
});

/** Template names by id (a sandbox shows its template's name; a snapshot's restore its id). */
export function templateNames(svc: SandboxService): Map<string, string> {
  return new Map(svc.templates().map((t) => [t.id, t.name]));
}

export function sandboxView(
  svc: SandboxService,
  s: SandboxRecord,
  names: Map<string, string>,
  history = svc.statsHistory(s.id),
): DashSandbox {
  return {
    id: s.id,
    template: names.get(s.templateId) ?? s.templateId,
    state: s.state,
    condition: s.condition?.code ?? null,
    metadata: s.metadata,
    memoryMiB: s.memoryMiB,
    vcpus: s.vcpus,
    createdAt: s.createdAt,
    startedAt: s.startedAt,
    endAt: s.endAt,
    endReason: s.endReason,
    recent: history.slice(-RECENT_SAMPLES).map(sampleView),
  };
}

export const snapshotView = (s: SnapshotRecord): DashSnapshot => ({
  id: s.id,
  name: s.name,
  kind: s.kind,
  sandboxId: s.sandboxId,
  templateId: s.templateId,
  createdAt: s.createdAt,
});

export const keyView = (k: ApiKeyRecord): DashKey => ({
  id: k.id,
  name: k.name,
  prefix: k.prefix,
  admin: k.admin,
  createdAt: k.createdAt,
  lastUsedAt: k.lastUsedAt,
});

/** A failed build's reason as one line: `step: message`. */
export const reasonText = (r: TemplateBuildRecord['reason']): string | null =>
  r ? (r.step ? `${r.step}: ${r.message}` : r.message) : null;

export function templateView(svc: SandboxService, t: TemplateView): DashTemplate {
  return {
    id: t.templateId,
    name: t.name,
    ready: t.template ? svc.templateReady(t.template) : false,
    memoryMiB: t.template?.memoryMiB ?? null,
    vcpus: t.template?.vcpus ?? null,
    createdAt: t.template?.createdAt ?? null,
    builds: t.builds.map((b) => ({
      id: b.id,
      status: b.status,
      createdAt: b.createdAt,
      reason: reasonText(b.reason),
    })),
  };
}
