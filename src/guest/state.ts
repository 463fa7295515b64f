/** What `/init` configures; kept in memory (a restored snapshot gets a fresh `/init`). */
export interface AgentState {
  accessToken: string | undefined;
  /**
   * SHA-256 (hex) of the bootstrap token, while no access token is set: a restored template's
   * agent accepts only the /init that presents it (kilnd's). Cleared once /init sets a token.
   */
  bootstrapTokenSha256: string | undefined;
  envVars: Record<string, string>;
  defaultUser: string;
  defaultWorkdir: string | undefined;
  /** Last applied /init timestamp (ms), to ignore replays. */
  lastInitMs: number;
}
