/** What the envd suite's subject files (commands, files, pty, protocol) share. */
import { createHash } from 'node:crypto';
import type { Sandbox } from 'e2b';
import type { EnvdSdk, EnvdTarget } from './envd.suite.ts';

/** The target under test and its SDK sandbox, once the suite's `before` made them. */
export interface Current {
  t: EnvdTarget;
  sbx: Sandbox;
  /** The SDK release the sandbox is of (its error classes). */
  sdk: EnvdSdk;
}

export const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function until<T>(fn: () => T | undefined | Promise<T | undefined>, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(50);
  }
}

/** fetch on the agent's URL, with the target's routing headers. */
export const fetchAgent = (t: EnvdTarget, path: string, init: RequestInit = {}): Promise<Response> =>
  fetch(t.agentUrl + path, {
    ...init,
    headers: { ...t.routeHeaders, ...(init.headers as Record<string, string> | undefined) },
  });
