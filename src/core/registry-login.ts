/**
 * Registry credentials of a template build (E2B's `fromImageRegistry`, kiln's `kiln template
 * build --registry-user`), parsed and kept so they cannot leak: the password is a private field
 * that JSON, `util.inspect` (and so pino) and object spreads never show. They live in memory for
 * the running build only; nothing stores them (a build cut short by a restart fails anyway).
 * Pure: no I/O.
 */
import { inspect } from 'node:util';
import { invalidArgument } from './errors.ts';

/** The longest user name and password kiln takes (registry tokens are JWTs of a few KiB). */
export const REGISTRY_USER_MAX = 256;
export const REGISTRY_PASSWORD_MAX = 16_384;

/** A user name and password for a registry (basic auth, or exchanged for a bearer token). */
export class RegistryLogin {
  readonly username: string;
  readonly #password: string;

  constructor(username: string, password: string) {
    this.username = username;
    this.#password = password;
  }

  /** The secret, for the one place that sends it (the image build's child, over its stdin). */
  get password(): string {
    return this.#password;
  }

  /** What a stored or logged copy shows: that credentials were given, none of them. */
  toJSON(): { type: 'registry' } {
    return { type: 'registry' };
  }

  [inspect.custom](): string {
    return 'RegistryLogin { <hidden> }';
  }
}

const FIELD = 'fromImageRegistry';

const SDK_FORM = 'type "registry" (the SDK\'s fromImage(image, {username, password}))';
/** Why AWS's credential type is refused, and what works instead. */
const AWS_REFUSAL =
  'is not supported: kiln does not call AWS (ECR GetAuthorizationToken) to turn access keys into a ' +
  `registry password; use ${SDK_FORM} with username "AWS" and the password ` +
  '`aws ecr get-login-password` prints';
/**
 * The user name Google's registries take with a service account's JSON key as the password
 * (basic auth): what E2B does with `gcp` (go-containerregistry's JSON key authenticator).
 */
export const GCP_JSON_KEY_USER = '_json_key';

/** One credential field: a non-empty string of at most `max` characters (its value never in the message). */
function secretField(raw: Record<string, unknown>, name: string, max: number): string {
  const field = `${FIELD}.${name}`;
  const v = raw[name];
  if (typeof v !== 'string') throw invalidArgument(field, 'must be a string');
  if (v.length === 0) throw invalidArgument(field, 'must not be empty');
  if (v.length > max) throw invalidArgument(field, `must be at most ${String(max)} characters`);
  if (v.includes('\0')) throw invalidArgument(field, 'must not contain NUL');
  return v;
}

/**
 * Parses E2B's `FromImageRegistry`: `{type: 'registry', username, password}`, or `{type: 'gcp',
 * serviceAccountJson}` (basic auth as `_json_key`, as E2B does); `invalid_argument` naming the
 * field for anything else. `aws` is refused, saying why and what to send instead; absent (or
 * null, as E2B's SDK may send it) is no credentials.
 */
export function parseRegistryLogin(raw: unknown): RegistryLogin | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw !== 'object' || Array.isArray(raw))
    throw invalidArgument(FIELD, 'must be an object {type: "registry", username, password}');
  const r = raw as Record<string, unknown>;
  const type = r['type'];
  if (typeof type !== 'string') throw invalidArgument(`${FIELD}.type`, 'must be a string ("registry")');
  if (type === 'aws') throw invalidArgument(`${FIELD}.type`, `"aws" ${AWS_REFUSAL}`);
  // The SDK's fromGCPRegistry(image, {serviceAccountJson}): a JSON key, sent as E2B sends it.
  if (type === 'gcp')
    return new RegistryLogin(GCP_JSON_KEY_USER, secretField(r, 'serviceAccountJson', REGISTRY_PASSWORD_MAX));
  if (type !== 'registry')
    throw invalidArgument(
      `${FIELD}.type`,
      `"${type.slice(0, 40)}" is not a registry type (registry, aws, gcp)`,
    );
  const username = secretField(r, 'username', REGISTRY_USER_MAX);
  // Basic auth joins them with a colon: a colon in the user name would move the split.
  if (username.includes(':')) throw invalidArgument(`${FIELD}.username`, 'must not contain ":"');
  return new RegistryLogin(username, secretField(r, 'password', REGISTRY_PASSWORD_MAX));
}
