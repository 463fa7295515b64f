import { isIP } from 'node:net';
import { invalidArgument } from '../../core/errors.ts';

/** A parsed image reference `host[:port]/name[:tag][@sha256:digest]`. */
export interface ImageReference {
  /** `host[:port]` as written (lower-cased host). */
  registry: string;
  host: string;
  repository: string;
  /** The tag, unless the reference names a digest (default "latest"). */
  tag: string | undefined;
  /** `sha256:<64 hex>` when given: the manifest must hash to it. */
  digest: string | undefined;
}

const REPO_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
export const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;
const HOST_RE = /^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?$/;

/**
 * Parses `host[:port]/name[:tag]` or `host[:port]/name@sha256:<hex>`. The registry host is
 * required (kiln has no default registry: nothing is pulled from the internet by surprise).
 */
export function parseReference(ref: string): ImageReference {
  const bad = (why: string): Error => invalidArgument('image', `"${ref}" is not an image reference: ${why}`);
  if (typeof ref !== 'string' || ref.length === 0 || ref.length > 512) throw bad('empty or too long');
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST_RE.test(digest)) throw bad('the digest must be sha256:<64 lower-case hex digits>');
  }
  const slash = rest.indexOf('/');
  if (slash < 0) throw bad('it must name the registry, as host:port/name:tag');
  const registry = rest.slice(0, slash).toLowerCase();
  if (
    !HOST_RE.test(registry) ||
    !(registry.includes('.') || registry.includes(':') || registry === 'localhost')
  )
    throw bad(`"${registry}" is not a registry host[:port]`);
  let repository = rest.slice(slash + 1);
  let tag: string | undefined;
  const colon = repository.lastIndexOf(':');
  if (colon >= 0) {
    tag = repository.slice(colon + 1);
    repository = repository.slice(0, colon);
    if (!TAG_RE.test(tag)) throw bad(`"${tag}" is not a valid tag`);
  }
  if (!REPO_RE.test(repository) || repository.length > 255)
    throw bad(`"${repository}" is not a repository name (lower-case, "/"-separated)`);
  if (tag === undefined && digest === undefined) tag = 'latest';
  const host = registry.replace(/:[0-9]+$/, '').replace(/^\[(.*)\]$/, '$1');
  return { registry, host, repository, tag, digest };
}

/** True for names and addresses that stay on this machine: localhost, 127.0.0.0/8, ::1. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || h === '0:0:0:0:0:0:0:1';
  return false;
}

/**
 * The transport rule: HTTPS always, except plain HTTP for a loopback registry (nothing leaves
 * the machine) or one the caller lists in `insecure` (`host:port` as written in references).
 */
export function registryScheme(
  registry: string,
  host: string,
  insecure: readonly string[] = [],
): 'http' | 'https' {
  return isLoopbackHost(host) || insecure.includes(registry) ? 'http' : 'https';
}

/** The reference as written back (for logs and manifests). */
export const formatReference = (r: ImageReference): string =>
  `${r.registry}/${r.repository}${r.tag !== undefined ? `:${r.tag}` : ''}${r.digest !== undefined ? `@${r.digest}` : ''}`;
