/** What every command gets from the composition root (main.ts): no command reads the environment. */
import type { KilnClient } from '../sdk/client.ts';

export interface CliContext {
  /** kilnd's state dir (its socket, pid file, log). */
  stateDir: string;
  /** Images, Node, downloads. */
  cacheDir: string;
  /** Where the image build keeps downloaded .debs (undefined: inside cacheDir). */
  debCacheDir: string | undefined;
  /** The Debian mirror image builds use (undefined: the host's apt source). */
  debianMirror: string | undefined;
  /** The environment a foreground kilnd gets. */
  env: NodeJS.ProcessEnv;
  /** Aborted on Ctrl-C. */
  signal: AbortSignal;
  /** A progress or status line for people, on stderr. */
  say: (s: string) => void;
  /** A client of the running daemon, starting one when none answers. */
  connect: () => Promise<KilnClient>;
}
