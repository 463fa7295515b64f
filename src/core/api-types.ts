/**
 * The native API's request and response bodies (docs/openapi.json), shared by the API handlers
 * (src/api/native) and the client (src/sdk). Each body type has a field table next to it: the
 * `satisfies Record<keyof T, true>` makes the compiler keep the table and the type identical,
 * and src/core/api-types.test.ts keeps the tables and docs/openapi.json identical, so the three
 * cannot drift apart.
 */
import type {
  ArtifactRecord,
  EventRecord,
  SandboxCondition,
  SandboxState,
  SnapshotKind,
  TemplateRecord,
} from './domain.ts';

/** The field table of `T`: every key of `T`, nothing else. */
export type Fields<T> = Record<keyof T, true>;

// ---- responses

/** A sandbox (the same names the E2B API uses where they overlap). */
export interface SandboxView {
  sandboxId: string;
  templateId: string;
  state: SandboxState;
  memoryMiB: number;
  vcpus: number;
  metadata: Record<string, string>;
  createdAt: string;
  startedAt: string | null;
  endAt: string;
  endReason: string | null;
  /** What is wrong with it now (the guest does not answer, the host's disk is full...), or null. */
  condition: SandboxCondition | null;
  envdAccessToken: string;
  /** The API key that created it through the E2B API (null: the native API). */
  ownerKeyId: string | null;
  /** Its network rules (E2B's names). */
  network: NetworkView;
  /** What a request to a published port must carry (`allowPublicTraffic: false`), else null. */
  trafficAccessToken: string | null;
}

/**
 * A sandbox's network rules, normalised (CIDRs `a.b.c.d/n`, domains lowercase): egress
 * (`allowOut` CIDRs and domains; `denyOut` CIDRs; `allowInternet`) and its published ports.
 */
export interface NetworkView {
  allowOut: string[];
  denyOut: string[];
  allowInternet: boolean;
  allowPublicTraffic: boolean;
  maskRequestHost: string | null;
}
export const NETWORK_VIEW_FIELDS = {
  allowOut: true,
  denyOut: true,
  allowInternet: true,
  allowPublicTraffic: true,
  maskRequestHost: true,
} as const satisfies Fields<NetworkView>;
export const SANDBOX_VIEW_FIELDS = {
  sandboxId: true,
  templateId: true,
  state: true,
  memoryMiB: true,
  vcpus: true,
  metadata: true,
  createdAt: true,
  startedAt: true,
  endAt: true,
  endReason: true,
  condition: true,
  envdAccessToken: true,
  ownerKeyId: true,
  network: true,
  trafficAccessToken: true,
} as const satisfies Fields<SandboxView>;

/** A template record as it is (kiln keeps nothing private in it), and whether it can be used. */
export interface TemplateView extends TemplateRecord {
  /** Sandboxes can be made from it (false: no snapshot yet, or built by an older kiln: rebuild). */
  ready: boolean;
}
export const TEMPLATE_VIEW_FIELDS = {
  id: true,
  name: true,
  imageKey: true,
  memoryMiB: true,
  vcpus: true,
  snapshotId: true,
  createdAt: true,
  ownerKeyId: true,
  ready: true,
} as const satisfies Fields<TemplateView>;

/** A snapshot (the guest token it holds stays private). */
export interface SnapshotView {
  snapshotId: string;
  name: string | null;
  kind: SnapshotKind;
  sandboxId: string | null;
  templateId: string;
  parentId: string | null;
  memoryMiB: number;
  vcpus: number;
  pauseMs: number | null;
  artifacts: ArtifactRecord[];
  createdAt: string;
  /** The API key it belongs to (null: admin keys only). */
  ownerKeyId: string | null;
}
export const SNAPSHOT_VIEW_FIELDS = {
  snapshotId: true,
  name: true,
  kind: true,
  sandboxId: true,
  templateId: true,
  parentId: true,
  memoryMiB: true,
  vcpus: true,
  pauseMs: true,
  artifacts: true,
  createdAt: true,
  ownerKeyId: true,
} as const satisfies Fields<SnapshotView>;

/** What a fork answers: the snapshot the clones came from and, per clone, a sandbox or an error. */
export interface ForkView {
  snapshotId: string;
  results: ({ sandbox: SandboxView } | { error: { code: string; message: string } })[];
}

export interface StatsView {
  sandboxId: string;
  cpuPct: number;
  rssBytes: number;
  pssBytes: number;
  diskBytes: number;
  memoryMiB: number;
  at: string;
}
export const STATS_VIEW_FIELDS = {
  sandboxId: true,
  cpuPct: true,
  rssBytes: true,
  pssBytes: true,
  diskBytes: true,
  memoryMiB: true,
  at: true,
} as const satisfies Fields<StatsView>;

/** Where a sandbox's guest port is published (GET /v1/sandboxes/{id}/ports/{port}). */
export interface PortView {
  sandboxId: string;
  port: number;
  /** `{port}-{sandboxId}.<domain>`: what the E2B SDK's `sandbox.getHost(port)` answers. */
  host: string;
  /** `http://<host>/`. */
  url: string;
}
export const PORT_VIEW_FIELDS = {
  sandboxId: true,
  port: true,
  host: true,
  url: true,
} as const satisfies Fields<PortView>;

/** An entry of a sandbox's event log, as the store keeps it. */
export type EventView = EventRecord;

/** An API key as listed: never the key itself (only its hash is kept), its prefix instead. */
export interface ApiKeyView {
  id: string;
  name: string;
  /** The key's first characters (the key itself is shown only when created). */
  prefix: string;
  createdAt: string;
  lastUsedAt: string | null;
  /** Sees and acts on every sandbox, snapshot and template (else only those it created). */
  admin: boolean;
}
export const API_KEY_VIEW_FIELDS = {
  id: true,
  name: true,
  prefix: true,
  createdAt: true,
  lastUsedAt: true,
  admin: true,
} as const satisfies Fields<ApiKeyView>;

/** A volume (E2B's volumes): its files live on the host, sandboxes mount it at create. */
export interface VolumeView {
  id: string;
  name: string;
  createdAt: string;
  /** Live sandboxes (running, paused, ...) that mount it: while any does, it cannot be deleted. */
  mountedBy: string[];
}
export const VOLUME_VIEW_FIELDS = {
  id: true,
  name: true,
  createdAt: true,
  mountedBy: true,
} as const satisfies Fields<VolumeView>;

/** A key just created: the one answer that carries the key itself. */
export type CreatedApiKeyView = ApiKeyView & { key: string };

/** What points the `e2b` SDK at this kilnd (what `kiln e2b env` prints). */
export interface E2bEnvView {
  apiUrl: string;
  sandboxUrl: string;
  apiKey: string;
}

/** Where kilnd's web dashboard answers (`kiln dashboard`); `expiresAt` for a one-time sign-in link. */
export interface DashboardView {
  url: string;
  expiresAt: string | null;
}

export interface HealthView {
  ok: boolean;
  version: string;
}

/** A page of a list; `next` is the cursor of the following page (null: the last). */
export interface PageView<T> {
  items: T[];
  next: string | null;
}

/** How `kiln workspace push` lays a repository into a sandbox. */
export type WorkspaceMode = 'full_copy' | 'shallow_overlay' | 'metadata_only';
export const WORKSPACE_MODES: readonly WorkspaceMode[] = ['full_copy', 'shallow_overlay', 'metadata_only'];

/** POST /v1/sandboxes/:id/workspace: what a push laid down (also logged as the sandbox's event). */
export interface WorkspaceView {
  sandboxId: string;
  /** Where the repository is in the guest (inside the sandbox user's home). */
  guestPath: string;
  mode: WorkspaceMode;
  /** The commit the push was based on (the host's HEAD): export's default base. */
  base: string;
  /** The branch checked out in the guest (null: detached HEAD). */
  branch: string | null;
  readOnly: boolean;
  /** Bytes of the tar stream received. */
  bytes: number;
  pushedAt: string;
}
export const WORKSPACE_VIEW_FIELDS = {
  sandboxId: true,
  guestPath: true,
  mode: true,
  base: true,
  branch: true,
  readOnly: true,
  bytes: true,
  pushedAt: true,
} as const satisfies Fields<WorkspaceView>;

/** One changed path of a workspace export (git's name-status letters: A, M, D, T, R). */
export interface WorkspaceChange {
  status: string;
  path: string;
  /** The path before a rename (status R). */
  from?: string;
}

/**
 * POST /v1/sandboxes/:id/workspace/export answers this as its first line (JSON), followed by the
 * binary patch (`git diff --binary` against `base`) up to the end of the body.
 */
export interface WorkspaceExportHead {
  guestPath: string;
  base: string;
  files: WorkspaceChange[];
}

/** One line of the exec stream (newline-delimited JSON). */
export type ExecLine =
  | { start: { pid: number } }
  | { stdout: string }
  | { stderr: string }
  | { exit: { exitCode: number; status: string } }
  | { error: { code: string; message: string; opId: string } };

// ---- requests

/** POST /v1/sandboxes. */
export interface CreateSandboxRequest {
  /** A template (name or id) or a snapshot (id or name); the default template is built on first use. */
  template: string;
  timeoutS?: number;
  metadata?: Record<string, string>;
  envVars?: Record<string, string>;
  memoryMiB?: number;
  vcpus?: number;
  /** At the timeout, pause instead of kill. */
  autoPause?: boolean;
  /** With autoPause: traffic for the paused sandbox resumes it. */
  autoResume?: boolean;
  /** False: no egress but what `network.allowOut` names (E2B's `allow_internet_access`). */
  allowInternet?: boolean;
  /** Egress rules and published-port settings (E2B's `SandboxNetworkConfig`). */
  network?: NetworkRequest;
  /** Volumes to mount (E2B's `volumeMounts`): a volume's name or id at an absolute guest path. */
  volumeMounts?: { name: string; path: string }[];
}

/**
 * The network of a create (E2B's `SandboxNetworkConfig` names). `allowOut`: CIDRs, IPs, domains
 * (`example.com`, `*.example.com`); `denyOut`: CIDRs and IPs. Allowed entries win over denied.
 */
export interface NetworkRequest {
  allowOut?: string[];
  denyOut?: string[];
  /** False: published ports answer only requests carrying the traffic access token. */
  allowPublicTraffic?: boolean;
  /** The Host header sent to a published port (`${PORT}` is replaced). */
  maskRequestHost?: string;
}
export const NETWORK_REQUEST_FIELDS = {
  allowOut: true,
  denyOut: true,
  allowPublicTraffic: true,
  maskRequestHost: true,
} as const satisfies Fields<NetworkRequest>;

/** PUT /v1/sandboxes/{id}/network: the new egress rules, replacing all (omitted = cleared). */
export interface UpdateNetworkRequest {
  allowOut?: string[];
  denyOut?: string[];
  allowInternet?: boolean;
}
export const UPDATE_NETWORK_FIELDS = {
  allowOut: true,
  denyOut: true,
  allowInternet: true,
} as const satisfies Fields<UpdateNetworkRequest>;

export const CREATE_SANDBOX_FIELDS = {
  template: true,
  timeoutS: true,
  metadata: true,
  envVars: true,
  memoryMiB: true,
  vcpus: true,
  autoPause: true,
  autoResume: true,
  allowInternet: true,
  network: true,
  volumeMounts: true,
} as const satisfies Fields<CreateSandboxRequest>;

/** POST /v1/snapshots/{id}/restore: a create from that snapshot. */
export type RestoreSnapshotRequest = Omit<CreateSandboxRequest, 'template'>;
export const RESTORE_SNAPSHOT_FIELDS: Fields<RestoreSnapshotRequest> = Object.fromEntries(
  Object.entries(CREATE_SANDBOX_FIELDS).filter(([k]) => k !== 'template'),
) as Fields<RestoreSnapshotRequest>;

/** POST /v1/templates. */
export interface BuildTemplateRequest {
  name?: string;
  memoryMiB?: number;
  vcpus?: number;
}
export const BUILD_TEMPLATE_FIELDS = {
  name: true,
  memoryMiB: true,
  vcpus: true,
} as const satisfies Fields<BuildTemplateRequest>;

/** POST /v1/sandboxes/{id}/exec. */
export interface ExecRequest {
  cmd: string;
  user?: string;
  cwd?: string;
  envs?: Record<string, string>;
  /** 0 = no deadline. */
  timeoutMs?: number;
  /**
   * Keep the command's stdin open: the answer starts with `{"start":{"pid":N}}` and
   * POST /v1/sandboxes/{id}/processes/{pid}/stdin streams into it (default: EOF at once).
   */
  stdin?: boolean;
}
export const EXEC_FIELDS = {
  cmd: true,
  user: true,
  cwd: true,
  envs: true,
  timeoutMs: true,
  stdin: true,
} as const satisfies Fields<ExecRequest>;

/** POST /v1/sandboxes/{id}/timeout. */
export interface SetTimeoutRequest {
  timeoutS: number;
}
/** POST /v1/sandboxes/{id}/resume. */
export interface ResumeRequest {
  timeoutS?: number;
  /** false: boot the guest afresh on the pause's disk even if the pause kept memory (default true). */
  memory?: boolean;
}
/** POST /v1/sandboxes/{id}/fork. */
export interface ForkRequest {
  count?: number;
  timeoutS?: number;
}
export const FORK_FIELDS = { count: true, timeoutS: true } as const satisfies Fields<ForkRequest>;
/** POST /v1/sandboxes/{id}/snapshots. */
export interface SnapshotRequest {
  name?: string;
}
/** POST /v1/api-keys. */
export interface CreateApiKeyRequest {
  name?: string;
  admin?: boolean;
}

/** A template's warm pool (issue 15): the size it is kept at and what it holds now. */
export interface WarmPoolView {
  templateId: string;
  template: string;
  /** Restored VMs kept ready: the size set for it, else KILN_WARM_POOL for `base`, else 0. */
  size: number;
  /** Whether `size` was set for this template (false: the default). */
  sizeSet: boolean;
  /** Members ready for a create. */
  ready: number;
  /** Members being restored. */
  starting: number;
}
export const WARM_POOL_VIEW_FIELDS = {
  templateId: true,
  template: true,
  size: true,
  sizeSet: true,
  ready: true,
  starting: true,
} as const satisfies Fields<WarmPoolView>;

/** PUT /v1/templates/{id}/warm-pool: the size (0..64), or `reset` to go back to the default. */
export interface SetWarmPoolRequest {
  size?: number;
  reset?: boolean;
}
export const SET_WARM_POOL_FIELDS = {
  size: true,
  reset: true,
} as const satisfies Fields<SetWarmPoolRequest>;

export * from './template-gc-types.ts';
