/**
 * One behaviour list for kiln's guest agent, driven through the official `e2b` SDK's own client
 * paths. It runs against the agent in-process on the host (unit) and inside a real QEMU guest
 * (integration). The target says which user the default is and where the suite may write.
 * One file per subject: commands.ts, files.ts, pty.ts, protocol.ts (shared helpers: helpers.ts).
 */
import { after, before, describe } from 'node:test';
import { CommandExitError, NotEnoughSpaceError, type Sandbox } from 'e2b';
import { commandsTests } from './commands.ts';
import { filesTests } from './files.ts';
import type { Current } from './helpers.ts';
import { protocolTests } from './protocol.ts';
import { ptyTests } from './pty.ts';

export interface EnvdTarget {
  sandbox: Sandbox;
  /** Base URL of the agent (for raw HTTP checks): the agent itself, or kiln's envd proxy. */
  agentUrl: string;
  /** Headers that route raw requests to this agent through a proxy (E2b-Sandbox-Id). */
  routeHeaders?: Record<string, string>;
  accessToken: string;
  /** The user commands run as by default, and a scratch directory it owns. */
  defaultUser: string;
  dir: string;
  /** `dir` relative to the default user's home, when it lies below it (checks relative paths). */
  homeRelativeDir?: string;
  /** A non-root user of the target, for the permission tests. */
  otherUser: { name: string };
  /** The target is a throwaway VM: its disk may be filled and its clock set (never the test host's). */
  disposable?: boolean;
  close: () => Promise<void>;
}

/** An error class of one SDK release (`instanceof` holds only for that release's own classes). */
export type ErrorClass = abstract new (...args: never[]) => Error;

/**
 * The SDK release the suite drives (the sandbox's own): its error classes, and what an older
 * release lacks (those checks are then replaced by one that the release indeed lacks it).
 */
export interface EnvdSdk {
  name: string;
  CommandExitError: ErrorClass;
  NotEnoughSpaceError: ErrorClass;
  lacks: { closeStdin?: boolean; fileMetadata?: boolean };
}

/** The pinned `e2b` devDependency. */
export const PINNED_SDK: EnvdSdk = { name: 'e2b', CommandExitError, NotEnoughSpaceError, lacks: {} };

export function envdSuite(name: string, make: () => Promise<EnvdTarget>, sdk: EnvdSdk = PINNED_SDK): void {
  describe(`envd via the e2b SDK: ${name}`, { timeout: 600_000 }, () => {
    let cur: Current | undefined;
    const current = (): Current => {
      if (!cur) throw new Error('the envd target was not made');
      return cur;
    };
    before(async () => {
      const t = await make();
      cur = { t, sbx: t.sandbox, sdk };
    });
    after(async () => {
      await current().t.close();
    });
    commandsTests(current, sdk);
    filesTests(current);
    ptyTests(current);
    protocolTests(current);
  });
}
