/**
 * Which server an agent belongs to, as this server sees the cluster: weighted rendezvous
 * hashing (shared/lrw.ts) over the servers that are alive or suspect and have announced a
 * URL, weighted by their settled health scores.
 *
 * {@link Placement.decide} answers a handshake: welcome the agent here, or redirect it to
 * its owner. The owner is the first server in the agent's rank that the agent has not named
 * as unreachable (`avoid` in its hello; unless the server came back after that failure) and
 * that is not suspect (a server that may be dead gets no new agents); an agent that has
 * already followed `maxHops` redirects in a row is welcomed wherever it arrives.
 *
 * @module
 */
import type { Clock } from "../../shared/clock.ts";
import { createPlacement as prepare, type Placement as Prepared } from "../../shared/lrw.ts";
import type { ServerEntry } from "../../shared/protocol/mod.ts";
import type { ClusterMember } from "../cluster/cluster.ts";

/** A server placement may put agents on. */
export interface PlacementServer {
  id: string;
  url: string;
  /** Settled health score (0 = healthy). */
  health: number;
  /** Suspect servers keep their agents but get no new ones. */
  suspect: boolean;
  /**
   * Since when (epoch ms) this server has been alive or suspect without a break, as seen
   * here. A new incarnation (a restart, or a refuted suspicion) starts it over.
   */
  since: number;
}

/** What to do with an agent. */
export type Decision =
  | { kind: "welcome"; reason: string }
  | { kind: "redirect"; server: PlacementServer; reason: string };

/** A server an agent could not reach lately. */
export interface AvoidedServer {
  id: string;
  /** When the agent last failed to reach it (epoch ms, on this server's clock). */
  at: number;
}

/** What the agent said in its hello that placement honours. */
export interface PlacementHints {
  /** Redirects the agent followed in a row to get here. */
  hops?: number;
  /**
   * Servers the agent could not reach lately. One that has come back since the agent failed
   * to reach it (alive again, or at a new incarnation: it restarted) is not avoided.
   */
  avoid?: readonly AvoidedServer[];
}

/** Options for {@link createPlacement}. */
export interface PlacementOptions {
  /** This server's id. */
  serverId: string;
  /** This server's base URL (read when needed: it is known once the server listens). */
  url: () => string;
  /**
   * The cluster as this server sees it. Without one (a lone server) this server is the only
   * server, and every agent stays here.
   */
  members?: () => (Pick<ClusterMember, "id" | "url" | "state" | "health" | "settled"> & {
    incarnation?: number;
  })[];
  clock: Clock;
  /** See `placement.maxHops` in the server config. */
  maxHops: number;
  /** How long a computed view is reused, ms. Default 250. */
  cacheMs?: number;
}

/** Placement decisions for one server. */
export interface Placement {
  /** Welcome or redirect an agent at its handshake (or at a handoff check). */
  decide(agentId: string, hints?: PlacementHints): Decision;
  /**
   * The server `agentId` would be welcomed by now (its first-ranked server that is not
   * suspect): where its commands wait while it is offline.
   */
  owner(agentId: string): PlacementServer | undefined;
  /** The servers agents may be placed on, sorted by id. */
  servers(): PlacementServer[];
  /** The same, as sent to agents in a `servers` frame. */
  entries(): ServerEntry[];
}

/** Creates the placement for `serverId`. */
export function createPlacement(options: PlacementOptions): Placement {
  const cacheMs = options.cacheMs ?? 250;
  const since = new Map<string, { at: number; incarnation?: number }>();
  let view: PlacementServer[] = [];
  let prepared: Prepared<PlacementServer> = prepare([]);
  let viewKey = "";
  let viewAt = -Infinity;

  const refresh = (): PlacementServer[] => {
    const now = options.clock.now();
    if (now - viewAt < cacheMs) return view;
    viewAt = now;
    const next: PlacementServer[] = [];
    const live = new Set<string>();
    const members = options.members?.() ?? [{
      id: options.serverId,
      url: options.url(),
      state: "alive" as const,
      health: 0,
      settled: 0,
    }];
    for (const m of members) {
      if ((m.state !== "alive" && m.state !== "suspect") || !m.url) continue;
      live.add(m.id);
      const held = since.get(m.id);
      if (!held || held.incarnation !== m.incarnation) {
        since.set(m.id, { at: now, incarnation: m.incarnation });
      }
      next.push({
        id: m.id,
        url: m.url,
        health: m.settled ?? m.health ?? 0,
        suspect: m.state === "suspect",
        since: since.get(m.id)!.at,
      });
    }
    for (const id of since.keys()) if (!live.has(id)) since.delete(id);
    view = next.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    // Hash the server ids again only when something about the servers changed.
    const key = JSON.stringify(view);
    if (key !== viewKey) {
      viewKey = key;
      prepared = prepare(view);
    }
    return view;
  };
  const rank = (agentId: string): PlacementServer[] => {
    refresh();
    return prepared.rank(agentId);
  };

  return {
    decide(agentId, hints = {}) {
      const servers = refresh();
      if (!servers.some((s) => s.id === options.serverId)) {
        return { kind: "welcome", reason: "this server is not in its own cluster view yet" };
      }
      const failedAt = new Map((hints.avoid ?? []).map((a) => [a.id, a.at]));
      const avoided = (s: PlacementServer) => s.since <= (failedAt.get(s.id) ?? -Infinity);
      for (const s of rank(agentId)) {
        if (s.id === options.serverId) return { kind: "welcome", reason: "owner" };
        if (s.suspect || avoided(s)) continue;
        if ((hints.hops ?? 0) >= options.maxHops) {
          return {
            kind: "welcome",
            reason: `owner is ${s.id}, but the agent already followed ${hints.hops} redirects`,
          };
        }
        return { kind: "redirect", server: s, reason: `owner is ${s.id}` };
      }
      return { kind: "welcome", reason: "no other server can take it" };
    },
    owner(agentId) {
      const ranked = rank(agentId);
      return ranked.find((s) => !s.suspect || s.id === options.serverId) ?? ranked[0];
    },
    servers: refresh,
    entries: () => refresh().map((s) => ({ id: s.id, url: s.url, health: s.health })),
  };
}
