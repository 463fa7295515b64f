/** What `/init` configures; kept in memory (a restored snapshot gets a fresh `/init`). */
export interface AgentState {
  accessToken: string | undefined;
  envVars: Record<string, string>;
  defaultUser: string;
  defaultWorkdir: string | undefined;
  /** Last applied /init timestamp (ms), to ignore replays. */
  lastInitMs: number;
}
