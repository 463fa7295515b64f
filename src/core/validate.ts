import { invalidArgument } from './errors.ts';

/** Names of images, templates and VMs: they become file names, so no separators and no `..`. */
const NAME_RE = /^[a-z0-9][a-z0-9_-]*(?:\.[a-z0-9_-]+)*$/;
export const NAME_MAX = 63;

/** Checks an image/template/VM name and returns it; throws `invalid_argument` naming the field. */
export function validateName(field: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) {
    throw invalidArgument(field, 'must be a non-empty string');
  }
  if (value.length > NAME_MAX) throw invalidArgument(field, `must be at most ${NAME_MAX} characters`);
  if (value.includes('/') || value.includes('\\') || value.includes('..') || value.includes('\0')) {
    throw invalidArgument(field, `"${value}" must not contain "/", "\\", ".." or NUL`);
  }
  if (!NAME_RE.test(value)) {
    throw invalidArgument(field, `"${value}" must be lower-case letters, digits, "-", "_" and single dots`);
  }
  return value;
}

/** Guest resource bounds kiln accepts anywhere; hosts and templates may narrow them. */
export const LIMITS = {
  memoryMiB: { min: 128, max: 65536 },
  vcpus: { min: 1, max: 32 },
  /** A guest image's root filesystem (`kiln image build --disk`). */
  diskMiB: { min: 512, max: 262144 },
} as const;

export function validateInt(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw invalidArgument(field, `must be an integer, got ${JSON.stringify(value)}`);
  }
  if (value < min || value > max)
    throw invalidArgument(field, `must be between ${min} and ${max}, got ${value}`);
  return value;
}

/** The guest port the guest agent (envd) listens on. */
export const GUEST_AGENT_PORT = 49983;

/**
 * A guest TCP port the host may reach through a published port: 1-65535 but not the guest
 * agent's (reached only through the envd routes, with its access token). `invalid_argument`
 * naming `field` otherwise.
 */
export function validatePublishedPort(field: string, value: unknown): number {
  const port = validateInt(field, value, 1, 65535);
  if (port === GUEST_AGENT_PORT)
    throw invalidArgument(
      field,
      `${GUEST_AGENT_PORT} is the guest agent's port; it is reached only through the envd routes`,
    );
  return port;
}

export const validateMemoryMiB = (v: unknown): number =>
  validateInt('memoryMiB', v, LIMITS.memoryMiB.min, LIMITS.memoryMiB.max);
export const validateVcpus = (v: unknown): number =>
  validateInt('vcpus', v, LIMITS.vcpus.min, LIMITS.vcpus.max);

/** An optional object of strings (environment variables, metadata); `invalid_argument` naming the field. */
export function validateStringMap(field: string, value: unknown): Record<string, string> | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw invalidArgument(field, `must be an object of strings, got ${JSON.stringify(value)}`);
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string')
      throw invalidArgument(
        field,
        `value of ${JSON.stringify(k)} must be a string, got ${JSON.stringify(v)}`,
      );
  }
  return value as Record<string, string>;
}

/** The longest command deadline (24 h); 0 means none. */
export const MAX_EXEC_TIMEOUT_MS = 86_400_000;
