import type { Logger } from 'pino';
import type { Failpoint } from '../../core/failpoint.ts';
import type { NetworkProvider } from '../networks.ts';
import type { Store } from '../../store/store.ts';
import type { VmmDriver } from '../../vmm/driver.ts';
import type { DiskAdmission } from '../admission.ts';
import type { GuestClient, GuestTimeouts, HttpGuestClientOpts } from '../guest-client.ts';
import type { LivenessOpts } from '../liveness.ts';
import type { Caller } from '../scope.ts';
import type { VolumeService } from '../volumes/volume-service.ts';
import type { CreateSandboxRequest, StatsView } from '../../core/api-types.ts';
import type { EgressRules, SandboxNetwork } from '../../core/network-policy.ts';

/** The boot files of a guest image (what images/ builds). */
export interface BootImage {
  key: string;
  kernel: string;
  initrd: string;
  rootfs: string;
}

export interface SandboxServiceDeps {
  store: Store;
  driver: VmmDriver;
  guest: (o: HttpGuestClientOpts) => GuestClient;
  /** Resolves an image key recorded on a template back to its files. */
  image: (key: string) => Promise<BootImage>;
  /** Holds snapshots/<id>/ (template RAM, device state, frozen disk). */
  dataDir: string;
  log: Logger;
  now?: () => number;
  /** Refuse creates once live guests' memory would pass hostMemoryMiB x overcommitRatio. */
  capacity?: { hostMemoryMiB: number; overcommitRatio: number };
  /** Refuse creates and resumes whose disk could not grow to its size (src/daemon/admission.ts). */
  disk?: DiskAdmission;
  /** How long a restored guest may take to answer (default 60 s). */
  readyTimeoutMs?: number;
  /** Crash tests: called after every journalled step (see core/failpoint.ts). */
  failpoint?: Failpoint | undefined;
  /** Deadlines of calls into guests (defaults: guest-client's DEFAULT_GUEST_TIMEOUTS). */
  guestTimeouts?: Partial<GuestTimeouts>;
  /** How the liveness watcher probes guests and retries VMs stopped on a full disk. */
  liveness?: LivenessOpts;
  /** CPU time (ms) a VM's process has used (the liveness watcher's idle test); default /proc's. */
  vmCpuMs?: (pid: number) => number | undefined;
  /**
   * Sandbox networks: every VM runs in an isolated namespace with its egress rules. Absent: VMs
   * share the host's network (KILN_NETWORK=unisolated; they reach its loopback).
   */
  networks?: NetworkProvider | undefined;
  /** The user opted out of isolation (KILN_NETWORK=unisolated): every create warns, in an event too. */
  unisolated?: boolean;
  /**
   * Enforces a running sandbox's egress rules (src/net: nftables and the egress proxy). Called by
   * updateNetwork before the new rules are stored: a rejection leaves the old rules in force and
   * stored. Default: the sandbox's network slot of `networks`; absent both, rules are only stored.
   */
  egress?: EgressEnforcer | undefined;
  /** Volumes (E2B's): what creates mount; absent, a create with volume mounts is refused. */
  volumes?: VolumeService | undefined;
  /**
   * The warm pool's default: `defaultSize` (KILN_WARM_POOL) VMs for template `defaultTemplate`
   * (default `base`) unless a size is set for it; other templates have none unless set.
   */
  warmPool?: { defaultTemplate?: string; defaultSize: number } | undefined;
}

/** What updateNetwork needs of the network layer. */
export interface EgressEnforcer {
  /** Replaces the rules of running sandbox `sandboxId` atomically (all or nothing). */
  apply(sandboxId: string, egress: EgressRules): Promise<void>;
}

/**
 * What a create asks for: the native API's request type (core/api-types.ts), with the network
 * already parsed (core/network-parse.ts). `allowInternet` alone still works: it is
 * `network.egress.internet` of otherwise open rules.
 */
export type CreateRequest = Omit<CreateSandboxRequest, 'network'> & {
  network?: SandboxNetwork;
  /** With autoPause: false makes the timeout's pause filesystem-only (E2B's autoPauseMemory). */
  autoPauseMemory?: boolean;
};

export interface OpCtx {
  /** The request's op id, minted at the API edge. */
  opId?: string;
  /** The API key acting (E2B API): what it creates is its own, it sees only its own unless admin. */
  caller?: Caller | undefined;
}

/** One sample of a sandbox's host usage: the API's own view type (core/api-types.ts). */
export type SandboxStats = StatsView;

/** How often the background samples every sandbox's CPU, memory and disk. */
export const STATS_EVERY_MS = 5000;
export { DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S } from '../../core/defaults.ts';
/** A fork makes at most this many clones in one call. */
export const MAX_FORK = 32;
/** Disk chains longer than this (layers above the base image) are flattened. */
export const MAX_DISK_CHAIN = 4;
/** The states in which a sandbox still has (or is getting, or giving up) a VM or a pause snapshot. */
export const LIVE = ['creating', 'running', 'pausing', 'paused', 'resuming', 'killing'] as const;
