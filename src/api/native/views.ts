/** The native API's response bodies (types in core/api-types.ts, checked against docs/openapi.json). */
import type {
  ApiKeyView,
  NetworkView,
  SandboxView,
  SnapshotView,
  TemplateView,
} from '../../core/api-types.ts';
import type { SandboxNetwork } from '../../core/network-policy.ts';
import type { ApiKeyRecord, SandboxRecord, SnapshotRecord, TemplateRecord } from '../../core/domain.ts';

export function sandboxView(s: SandboxRecord): SandboxView {
  return {
    sandboxId: s.id,
    templateId: s.templateId,
    state: s.state,
    memoryMiB: s.memoryMiB,
    vcpus: s.vcpus,
    metadata: s.metadata,
    createdAt: s.createdAt,
    startedAt: s.startedAt,
    endAt: s.endAt,
    endReason: s.endReason,
    condition: s.condition,
    envdAccessToken: s.accessToken,
    ownerKeyId: s.ownerKeyId,
    network: networkView(s.network),
    trafficAccessToken: s.network.allowPublicTraffic ? null : s.trafficToken,
  };
}

export const networkView = (n: SandboxNetwork): NetworkView => ({
  allowOut: n.egress.allowOut,
  denyOut: n.egress.denyOut,
  allowInternet: n.egress.internet,
  allowPublicTraffic: n.allowPublicTraffic,
  maskRequestHost: n.maskRequestHost ?? null,
});

/** The guest token a snapshot holds stays private. */
export function snapshotView(x: SnapshotRecord): SnapshotView {
  return {
    snapshotId: x.id,
    name: x.name,
    kind: x.kind,
    sandboxId: x.sandboxId,
    templateId: x.templateId,
    parentId: x.parentId,
    memoryMiB: x.memoryMiB,
    vcpus: x.vcpus,
    pauseMs: x.pauseMs,
    artifacts: x.artifacts,
    createdAt: x.createdAt,
    ownerKeyId: x.ownerKeyId,
  };
}

export const templateView = (t: TemplateRecord, ready: boolean): TemplateView => ({
  id: t.id,
  name: t.name,
  imageKey: t.imageKey,
  memoryMiB: t.memoryMiB,
  vcpus: t.vcpus,
  snapshotId: t.snapshotId,
  createdAt: t.createdAt,
  ownerKeyId: t.ownerKeyId,
  ready,
});

/** Never the key itself (only its hash is kept): its prefix instead. */
export const apiKeyView = (k: ApiKeyRecord): ApiKeyView => ({
  id: k.id,
  name: k.name,
  prefix: k.prefix,
  createdAt: k.createdAt,
  lastUsedAt: k.lastUsedAt,
  admin: k.admin,
});
