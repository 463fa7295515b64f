/**
 * kiln's defaults, in one place: the API (native and E2B), the daemon, the sdk and the CLI all
 * take them from here, so "the default template" or "a sandbox's life" mean the same everywhere.
 */

/** The template a sandbox is made from when none is named (E2B's SDK uses this name too). */
export const DEFAULT_TEMPLATE = 'base';

/**
 * The metadata key of kiln's template builder sandboxes (its value: the build's id). They are
 * kiln's own: user lists (the native API's, E2B's) leave them out.
 */
export const BUILDER_METADATA_KEY = 'kiln.templateBuild';

/** Resources of a template built without any given (the default template's too). */
export const DEFAULT_MEMORY_MIB = 512;
export const DEFAULT_VCPUS = 1;
export const DEFAULT_TEMPLATE_RESOURCES: { readonly memoryMiB: number; readonly vcpus: number } = {
  memoryMiB: DEFAULT_MEMORY_MIB,
  vcpus: DEFAULT_VCPUS,
};

/** Seconds a sandbox lives when no timeout is given (E2B's default), and the longest allowed. */
export const DEFAULT_TIMEOUT_S = 300;
export const MAX_TIMEOUT_S = 24 * 3600;

/** Clones a fork makes when no count is given. */
export const DEFAULT_FORK_COUNT = 1;

/** Name of an API key created without one. */
export const DEFAULT_API_KEY_NAME = 'default';

/** Create options not given: kiln kills at the timeout, does not resume, lets the guest out. */
export const DEFAULT_CREATE_FLAGS = { autoPause: false, autoResume: false, allowInternet: true } as const;

/** The most VMs a warm pool may hold per template (a pool is memory held back from sandboxes). */
export const MAX_WARM_POOL = 64;
