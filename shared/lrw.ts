/**
 * Weighted rendezvous (highest random weight) hashing: which server owns an agent. Pure and
 * deterministic, so every server and every agent computes the same answer from the same server
 * list.
 *
 * For agent `a` and server `s` with weight `w`: `u` is a stable 64-bit hash of `(a, s)` mapped
 * into (0, 1), and the score is `-w / ln(u)`. The owner is the server with the highest score
 * (ties, vanishingly rare, go to the smaller server id); {@link rank} orders all servers by
 * score, so when the owner goes away its agents move to their next-ranked server and no other
 * agent moves. A server gets a share of agents proportional to its weight.
 *
 * Weights come from Lifeguard health scores: `w = 1 / max(1, 1 + health)`, then turned into
 * exact integers — each weight times the least common multiple of the `1 + health` values,
 * divided by the weights' greatest common divisor — so the ratios are exact, equal health gives
 * weight 1 everywhere, and no floating-point rounding can differ between machines.
 *
 * @module
 */
import { createHash } from "node:crypto";

/** A server as placement sees it. */
export interface LrwServer {
  /** Server id. */
  id: string;
  /** Lifeguard health score: 0 is healthy; higher is less healthy. */
  health: number;
}

/** A server with its integer placement weight. */
export interface WeightedServer extends LrwServer {
  weight: number;
}

const TWO_53 = 2 ** 53;

/** `u` in (0, 1) from the first 53 bits of SHA-256 of the agent and server ids. */
export function unitHash(agentId: string, serverId: string): number {
  const digest = createHash("sha256").update(agentId).update("\u0000").update(serverId).digest();
  // 53 bits: 32 from the first word, 21 from the second.
  const high = digest.readUInt32BE(0);
  const low = digest.readUInt32BE(4) >>> 11;
  return (high * 2 ** 21 + low + 0.5) / TWO_53;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * Integer weights for the servers' health scores (see the module doc). Health below 0 counts
 * as 0, fractions are floored.
 */
export function weights(servers: readonly LrwServer[]): WeightedServer[] {
  const denominators = servers.map((s) => 1 + Math.max(0, Math.floor(s.health)));
  const lcm = denominators.reduce((acc, d) => (acc / gcd(acc, d)) * d, 1);
  const raw = denominators.map((d) => lcm / d);
  const divisor = raw.reduce((acc, w) => gcd(acc, w), 0) || 1;
  return servers.map((s, i) => ({ ...s, weight: raw[i] / divisor }));
}

/** The placement score of an agent on a server of weight `weight`. */
export function score(agentId: string, serverId: string, weight: number): number {
  return -weight / Math.log(unitHash(agentId, serverId));
}

/** Servers ordered by their score for `agentId`, the owner first (ties: smaller id first). */
export function rank<S extends LrwServer>(agentId: string, servers: readonly S[]): S[] {
  const weighted = weights(servers);
  return weighted
    .map((s, i) => ({ server: servers[i], score: score(agentId, s.id, s.weight) }))
    .sort((a, b) =>
      b.score - a.score || (a.server.id < b.server.id ? -1 : a.server.id > b.server.id ? 1 : 0)
    )
    .map((x) => x.server);
}

/** The server that owns `agentId`, or undefined when there is none. */
export function owner<S extends LrwServer>(agentId: string, servers: readonly S[]): S | undefined {
  return servers.length ? rank(agentId, servers)[0] : undefined;
}
