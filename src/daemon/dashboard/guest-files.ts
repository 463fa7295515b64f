import { request, type IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { KilnError } from '../../core/errors.ts';
import { FileType, Filesystem } from '../../core/envd/filesystem/filesystem_pb.js';
import { HttpGuestClient } from '../guest-client.ts';

/** Where a running sandbox's agent answers (SandboxService.agent). */
export type AgentOf = (id: string) => Promise<{ sandbox: { accessToken: string }; baseUrl: string }>;

/** One entry of a guest directory, as the dashboard's file browser lists it. */
export interface GuestEntry {
  name: string;
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  modified: string | null;
}

/** The guest user the dashboard acts as: the one E2B's SDK uses by default. */
export const DASHBOARD_GUEST_USER = 'user';

const basic = (user: string): string => `Basic ${Buffer.from(`${user}:`).toString('base64')}`;

function typeOf(t: FileType): GuestEntry['type'] {
  if (t === FileType.FILE) return 'file';
  if (t === FileType.DIRECTORY) return 'dir';
  if (t === FileType.SYMLINK) return 'symlink';
  return 'other';
}

/** The agent's refusal as a catalog error: its own answer says which rule it broke. */
function guestFileError(e: unknown, what: string): KilnError {
  const ce = ConnectError.from(e);
  if (ce.code === Code.NotFound) return new KilnError('not_found', `${what}: ${ce.rawMessage}`);
  if (ce.code === Code.InvalidArgument || ce.code === Code.PermissionDenied)
    return new KilnError('invalid_argument', `${what}: ${ce.rawMessage}`);
  return new KilnError('guest_agent_error', `${what}: ${ce.rawMessage}`, { cause: e });
}

/**
 * The dashboard's file browser over a running sandbox's guest agent (envd's filesystem service
 * and `/files`), as the default guest user: the agent applies its own rules (permissions, paths)
 * exactly as for the SDK.
 */
export class GuestFiles {
  readonly #agent: AgentOf;

  constructor(agent: AgentOf) {
    this.#agent = agent;
  }

  /** The entries of a guest directory, directories first, then by name. */
  async list(id: string, path: string, signal?: AbortSignal): Promise<GuestEntry[]> {
    const { sandbox, baseUrl } = await this.#agent(id);
    const fs = createClient(
      Filesystem,
      createConnectTransport({ baseUrl, httpVersion: '1.1', useBinaryFormat: true }),
    );
    try {
      const r = await fs.listDir(
        { path, depth: 1 },
        {
          headers: { 'x-access-token': sandbox.accessToken, authorization: basic(DASHBOARD_GUEST_USER) },
          timeoutMs: 15_000,
          ...(signal ? { signal } : {}),
        },
      );
      return r.entries
        .map((e): GuestEntry => ({
          name: e.name,
          path: e.path,
          type: typeOf(e.type),
          size: Number(e.size),
          modified: e.modifiedTime ? new Date(Number(e.modifiedTime.seconds) * 1000).toISOString() : null,
        }))
        .sort((a, b) => Number(b.type === 'dir') - Number(a.type === 'dir') || a.name.localeCompare(b.name));
    } catch (e) {
      throw guestFileError(e, `listing ${path} failed`);
    }
  }

  /** The guest's answer to GET /files (a stream); refused answers become catalog errors. */
  async download(id: string, path: string, signal?: AbortSignal): Promise<IncomingMessage> {
    const { sandbox, baseUrl } = await this.#agent(id);
    const q = new URLSearchParams({ path, username: DASHBOARD_GUEST_USER });
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = request(`${baseUrl}/files?${q.toString()}`, {
        agent: false,
        headers: { 'x-access-token': sandbox.accessToken },
        ...(signal ? { signal } : {}),
      });
      req.on('response', resolve);
      req.on('error', (e) => {
        reject(new KilnError('guest_agent_error', `download of ${path} failed: ${e.message}`, { cause: e }));
      });
      req.end();
    });
    if (res.statusCode === 200) return res;
    let text = '';
    for await (const c of res) text = (text + String(c)).slice(-2048);
    const code = res.statusCode === 404 ? 'not_found' : res.statusCode === 400 ? 'invalid_argument' : null;
    throw new KilnError(code ?? 'guest_agent_error', `the guest refused to send ${path}: ${text.trim()}`);
  }

  /** Streams `body` into the guest file `path` (created or replaced) as the default user. */
  async upload(id: string, path: string, body: Readable, signal?: AbortSignal): Promise<void> {
    const { sandbox, baseUrl } = await this.#agent(id);
    const guest = new HttpGuestClient({ baseUrl, accessToken: sandbox.accessToken });
    await guest.upload(path, body, { user: DASHBOARD_GUEST_USER, ...(signal ? { signal } : {}) });
  }
}
