/**
 * A sandbox's network rules, as the APIs accept them (E2B's `SandboxNetworkConfig` semantics) and
 * as the store keeps them. Parsing and checking live in `parseEgress`/`parseNetwork` (one place for
 * the E2B API, the native API and the CLI); the network layer (src/net) turns them into nftables
 * rules and the egress proxy's decisions.
 */

/**
 * Where a sandbox may send traffic. Entries are normalised: CIDRs as `a.b.c.d/n` or IPv6
 * `x::/n` (a bare address becomes /32 or /128), domains lowercase (`example.com`, or a wildcard
 * `*.example.com` matching subdomains at any depth but not the apex).
 */
export interface EgressRules {
  /**
   * CIDRs and domain names. Allowed entries win over `denyOut`, and an allowed CIDR also wins
   * over the always-denied ranges (host-local, private, link-local, ...) it names explicitly.
   */
  allowOut: string[];
  /** CIDRs only (E2B: "domain names are not supported for deny rules"). */
  denyOut: string[];
  /**
   * E2B's `allowInternetAccess`/`allow_internet_access`: false behaves as `denyOut` holding
   * 0.0.0.0/0 (and ::/0). Kept apart so that APIs echo back what was asked.
   */
  internet: boolean;
}

/** Everything about a sandbox's network that outlives one VM (pause/resume, restart, restore). */
export interface SandboxNetwork {
  egress: EgressRules;
  /**
   * E2B's `allowPublicTraffic`: false = a published port answers only requests that carry the
   * sandbox's traffic access token (header `e2b-traffic-access-token`).
   */
  allowPublicTraffic: boolean;
  /** E2B's `maskRequestHost`: the Host header sent to a published port (`${PORT}` replaced). */
  maskRequestHost?: string;
}

/** The rules of a sandbox created without any: everything out but the always-denied ranges. */
export const OPEN_NETWORK: SandboxNetwork = {
  egress: { allowOut: [], denyOut: [], internet: true },
  allowPublicTraffic: true,
};
