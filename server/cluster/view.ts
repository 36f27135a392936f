/**
 * The cluster-wide agent list: this server's own rows merged with the agent records other
 * servers gossip, so every server's `/v1/agents` shows every agent of the cluster with the
 * server it is connected to.
 *
 * @module
 */
import type { AgentInfo } from "../../shared/protocol/mod.ts";
import type { AgentRecord } from "./state.ts";

/**
 * Merges `local` (this server's registry list) with `gossiped` agent records. For an agent
 * both know, the connected one wins; if both or neither are connected, the one heard from
 * last. Sorted by id.
 */
export function mergeAgents(
  local: readonly AgentInfo[],
  gossiped: readonly AgentRecord[],
): AgentInfo[] {
  const byId = new Map<string, AgentInfo>(local.map((a) => [a.id, a]));
  for (const r of gossiped) {
    const mine = byId.get(r.id);
    const theirs: AgentInfo = {
      id: r.id,
      connected: r.connected,
      tags: { ...r.tags },
      server: r.server,
      lastSeen: r.lastSeen,
      firstSeen: mine?.firstSeen ?? r.lastSeen,
      kid: r.key.kid,
      version: mine?.version ?? null,
      address: mine?.address ?? null,
    };
    if (!mine || wins(theirs, mine)) byId.set(r.id, theirs);
  }
  return [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

function wins(candidate: AgentInfo, held: AgentInfo): boolean {
  if (candidate.connected !== held.connected) return candidate.connected;
  return (candidate.lastSeen ?? 0) > (held.lastSeen ?? 0);
}
