/** Talking to kilnd's dashboard API: JSON calls carrying the session's CSRF token, live streams. */
import { useEffect, useState } from 'preact/hooks';
import type { DashEvent, DashHost, DashSandbox, DashSession } from '../../../core/dashboard-types.ts';

let csrf = '';

/** Thrown for an error answer: kilnd's `{code, message}`. */
export class ApiError extends Error {
  readonly code: string;
  readonly status: number;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function failure(r: Response): Promise<ApiError> {
  let code = 'internal';
  let message = `${r.status} ${r.statusText}`;
  try {
    const b = (await r.json()) as { code?: string; message?: string };
    code = b.code ?? code;
    message = b.message ?? message;
  } catch {
    // not JSON
  }
  if (r.status === 401) location.assign('/login');
  return new ApiError(r.status, code, message);
}

export async function loadSession(): Promise<DashSession> {
  const r = await fetch('/api/session', { credentials: 'same-origin' });
  if (!r.ok) throw await failure(r);
  const s = (await r.json()) as DashSession;
  csrf = s.csrf;
  return s;
}

/** A JSON call; actions (not GET) carry the CSRF token. */
export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (method !== 'GET') headers['x-csrf-token'] = csrf;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  if (!r.ok) throw await failure(r);
  if (r.status === 204) return undefined as T;
  return (await r.json()) as T;
}

/** A sandbox action's route: `POST /api/sandboxes/:id/<action>`. */
export const actionPath = (id: string, action: string): string =>
  `/api/sandboxes/${encodeURIComponent(id)}/${action}`;

/** Streams a file into a sandbox (the browser sends it as it reads it). */
export async function uploadFile(sandboxId: string, path: string, file: Blob): Promise<void> {
  const r = await fetch(
    `/api/sandboxes/${encodeURIComponent(sandboxId)}/files/content?path=${encodeURIComponent(path)}`,
    {
      method: 'POST',
      headers: { 'x-csrf-token': csrf, 'content-type': 'application/octet-stream' },
      credentials: 'same-origin',
      body: file,
    },
  );
  if (!r.ok) throw await failure(r);
}

export async function signOut(): Promise<void> {
  await api('POST', '/logout');
  location.assign('/login');
}

export interface LiveState {
  sandboxes: DashSandbox[] | undefined;
  host: DashHost | undefined;
  events: DashEvent[];
  connected: boolean;
}

/**
 * The page's one live stream (server-sent events): the sandbox list and host figures, and the
 * events of `sandboxId` when given. The browser reconnects by itself; kilnd sends the whole
 * state again on every (re)connect.
 */
export function useLive(sandboxId?: string): LiveState {
  const [state, setState] = useState<LiveState>({
    sandboxes: undefined,
    host: undefined,
    events: [],
    connected: false,
  });
  useEffect(() => {
    const es = new EventSource(`/api/live${sandboxId ? `?sandbox=${encodeURIComponent(sandboxId)}` : ''}`);
    es.addEventListener('open', () => {
      setState((s) => ({ ...s, connected: true }));
    });
    es.addEventListener('error', () => {
      setState((s) => ({ ...s, connected: false }));
    });
    es.addEventListener('sandboxes', (e) => {
      const list = JSON.parse((e as MessageEvent<string>).data) as DashSandbox[];
      setState((s) => ({ ...s, sandboxes: list }));
    });
    es.addEventListener('host', (e) => {
      const host = JSON.parse((e as MessageEvent<string>).data) as DashHost;
      setState((s) => ({ ...s, host }));
    });
    es.addEventListener('events', (e) => {
      const { items } = JSON.parse((e as MessageEvent<string>).data) as { items: DashEvent[] };
      setState((s) => {
        const seen = new Set(s.events.map((x) => x.seq));
        return { ...s, events: [...s.events, ...items.filter((x) => !seen.has(x.seq))] };
      });
    });
    return () => {
      es.close();
    };
  }, [sandboxId]);
  return state;
}
