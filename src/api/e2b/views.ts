/** The E2B API's response bodies, in the names of E2B's public OpenAPI spec. */
import type { SandboxRecord, SandboxState, TemplateRecord } from '../../core/domain.ts';
import { ENVD_VERSION } from '../../core/envd-auth.ts';
import type { SandboxNetwork } from '../../core/network-policy.ts';
import type { SandboxService } from '../../daemon/sandbox-service.ts';

/** `Sandbox`: what create and connect answer. */
export interface E2bSandbox {
  sandboxID: string;
  templateID: string;
  alias?: string;
  clientID: string;
  envdVersion: string;
  envdAccessToken: string;
  /** Only for a sandbox whose published ports are private (`allowPublicTraffic: false`). */
  trafficAccessToken: string | null;
  /** Where published ports are: `sandbox.getHost(port)` = `{port}-{sandboxID}.<domain>`. */
  domain: string | null;
}

/** `SandboxNetworkConfig` as get answers it (E2B SDK's `SandboxNetworkInfo`). */
export interface E2bNetwork {
  allowOut: string[];
  denyOut: string[];
  allowPublicTraffic: boolean;
  maskRequestHost?: string;
}

/** `ListedSandbox`. */
export interface E2bListedSandbox {
  sandboxID: string;
  templateID: string;
  alias?: string;
  clientID: string;
  startedAt: string;
  endAt: string;
  cpuCount: number;
  memoryMB: number;
  diskSizeMB: number;
  metadata: Record<string, string>;
  state: 'running' | 'paused';
  envdVersion: string;
  volumeMounts: { name: string; path: string }[];
}

/** `SandboxDetail`: the listed fields plus the token, domain, network and lifecycle. */
export interface E2bSandboxDetail extends E2bListedSandbox {
  envdAccessToken: string;
  domain: string | null;
  allowInternetAccess: boolean;
  network: E2bNetwork;
  lifecycle: { autoResume: boolean; onTimeout: 'pause' | 'kill' };
}

/** E2B knows two states; kiln's transitional ones map to where they are heading. */
export const e2bState = (s: SandboxState): 'running' | 'paused' =>
  s === 'paused' || s === 'pausing' ? 'paused' : 'running';

export const e2bNetwork = (n: SandboxNetwork): E2bNetwork => ({
  allowOut: n.egress.allowOut,
  denyOut: n.egress.denyOut,
  allowPublicTraffic: n.allowPublicTraffic,
  ...(n.maskRequestHost === undefined ? {} : { maskRequestHost: n.maskRequestHost }),
});

export interface E2bViews {
  sandbox: (s: SandboxRecord) => E2bSandbox;
  listed: (s: SandboxRecord) => E2bListedSandbox;
  detail: (s: SandboxRecord) => E2bSandboxDetail;
}

export function e2bViews(svc: SandboxService, domain: () => string | null): E2bViews {
  // Template names by id, for `alias` (templates are not renamed).
  const templates = new Map<string, TemplateRecord>();
  const alias = (id: string): { alias?: string } => {
    let t = templates.get(id);
    if (!t) {
      t = svc.templates().find((x) => x.id === id);
      if (t) templates.set(id, t);
    }
    return t ? { alias: t.name } : {};
  };
  const listed = (s: SandboxRecord): E2bListedSandbox => ({
    sandboxID: s.id,
    templateID: s.templateId,
    ...alias(s.templateId),
    clientID: 'kiln',
    startedAt: s.startedAt ?? s.createdAt,
    endAt: s.endAt,
    cpuCount: s.vcpus,
    memoryMB: s.memoryMiB,
    diskSizeMB: svc.diskSizeMiB(s) ?? 0,
    metadata: s.metadata,
    state: e2bState(s.state),
    envdVersion: ENVD_VERSION,
    volumeMounts: svc.volumes?.mountsOf(s.id) ?? [],
  });
  return {
    sandbox: (s) => ({
      sandboxID: s.id,
      templateID: s.templateId,
      ...alias(s.templateId),
      clientID: 'kiln',
      envdVersion: ENVD_VERSION,
      envdAccessToken: s.accessToken,
      trafficAccessToken: s.network.allowPublicTraffic ? null : s.trafficToken,
      domain: domain(),
    }),
    listed,
    detail: (s) => ({
      ...listed(s),
      envdAccessToken: s.accessToken,
      domain: domain(),
      allowInternetAccess: s.network.egress.internet,
      network: e2bNetwork(s.network),
      lifecycle: { autoResume: s.autoResume, onTimeout: s.autoPause ? 'pause' : 'kill' },
    }),
  };
}
