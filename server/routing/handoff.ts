/**
 * Keeps this server's agents where placement says they belong, without storms:
 *
 * - Every tick, the connected agents whose owner is now another server (a server joined,
 *   came back, or got healthier) are sent a `redirect` to it — at most `rate` per second,
 *   each told to wait a random time up to `spreadMs` before reconnecting. An agent is not
 *   handed off in its first `minAgeMs`, nor to a server alive for less than `settleMs`, nor
 *   (for `avoidMs` after it connected) to a server it named as unreachable in its hello,
 *   unless that server has come back since the agent failed to reach it.
 * - When the set of servers or their settled health changes, every connected agent is sent
 *   the new list (`servers` frame, encoded once) so it can find its next-ranked server by
 *   itself if this one dies.
 *
 * Agents a dead server leaves behind need nothing from here: they reconnect to their
 * next-ranked server, which welcomes them as their new owner.
 *
 * @module
 */
import type { Clock, TimerId } from "../../shared/clock.ts";
import type { AuditEvent, AuditLog } from "../../shared/db/mod.ts";
import { type Logger, silentLogger } from "../../shared/log.ts";
import { type Random, randomId } from "../../shared/random.ts";
import { encodeFrame, type Redirect, type Servers } from "../../shared/protocol/mod.ts";
import type { LiveAgent } from "../agents/registry.ts";
import type { Placement } from "./placement.ts";

/** Close code for an agent that was handed off but did not leave. */
export const CLOSE_HANDED_OFF = 4003;
/** How long an agent handed off may take to leave before its socket is closed, beyond its wait. */
export const HANDOFF_GRACE_MS = 30_000;

/** Options for {@link startHandoff}. */
export interface HandoffOptions {
  serverId: string;
  placement: Placement;
  /** The agents connected here. */
  agents: () => Iterable<LiveAgent>;
  clock: Clock;
  random: Random;
  audit?: AuditLog;
  logger?: Logger;
  /** Most agents handed off per second. */
  rate: number;
  /** Upper bound of the random wait each handed-off agent gets, ms. */
  spreadMs: number;
  /** A server must have been alive this long to receive agents, ms. */
  settleMs: number;
  /** Agents connected for less than this are left alone, ms. */
  minAgeMs: number;
  /** For this long after connecting, an agent's `avoid` list is honoured, ms. Default 60 s. */
  avoidMs?: number;
  /** How often the check runs, ms. Default 1000. */
  tickMs?: number;
}

/** The running handoff loop. */
export interface Handoff {
  /** One check now (also run every tick): returns how many agents were handed off. */
  check(): number;
  /** The current `servers` frame, encoded, for a newly welcomed agent. */
  serversFrame(): string;
  /** Stops the loop. Idempotent. */
  stop(): void;
}

/** Starts the handoff loop; the first check runs after one tick. */
export function startHandoff(options: HandoffOptions): Handoff {
  const { clock, random, placement } = options;
  const logger = options.logger ?? silentLogger;
  const tickMs = options.tickMs ?? 1000;
  const avoidMs = options.avoidMs ?? 60_000;
  /** Agents told to leave, and by when they must have. */
  const leaving = new Map<LiveAgent, number>();
  let budget = options.rate;
  let lastCheck = clock.now();
  let announced = "";
  let frame = "";
  let stopped = false;

  const serversFrame = (): string => {
    const servers = placement.entries();
    const key = JSON.stringify(servers);
    if (key !== announced) {
      announced = key;
      const f: Servers = { v: 1, id: randomId(random), type: "servers", servers };
      frame = encodeFrame(f);
    }
    return frame;
  };

  const announce = (agents: LiveAgent[]) => {
    const before = announced;
    const text = serversFrame();
    if (announced === before) return;
    for (const agent of agents) {
      try {
        agent.sendEncoded(text);
      } catch {
        // gone; its connection cleans up
      }
    }
    logger.info("sent the server list to agents", {
      servers: placement.entries().length,
      agents: agents.length,
    });
  };

  const check = (): number => {
    const now = clock.now();
    budget = Math.min(
      Math.max(1, options.rate),
      budget + (options.rate * (now - lastCheck)) / 1000,
    );
    lastCheck = now;
    // Agents that were told to leave and have not: closed, so they reconnect.
    for (const [agent, deadline] of leaving) {
      if (now < deadline) continue;
      leaving.delete(agent);
      try {
        agent.close(CLOSE_HANDED_OFF, "handed off to another server");
      } catch {
        // already closed
      }
    }
    const agents = [...options.agents()];
    announce(agents);
    const records: AuditEvent[] = [];
    for (const agent of agents) {
      if (budget < 1) break;
      if (leaving.has(agent) || now - agent.connectedAt < options.minAgeMs) continue;
      // A server the agent could not reach is avoided for a while after it connected —
      // unless it has come back since (placement compares the times).
      const avoid = now - agent.connectedAt < avoidMs ? agent.avoid : [];
      const decision = placement.decide(agent.id, { avoid });
      if (decision.kind !== "redirect" || now - decision.server.since < options.settleMs) continue;
      const wait = Math.floor(random.float() * options.spreadMs);
      const redirect: Redirect = {
        v: 1,
        id: randomId(random),
        type: "redirect",
        url: decision.server.url,
        reason: `handoff: ${decision.reason}`,
        retryAfter: wait,
      };
      try {
        agent.send(redirect);
      } catch {
        continue;
      }
      budget--;
      leaving.set(agent, now + wait + HANDOFF_GRACE_MS);
      records.push({
        actor: `server:${options.serverId}`,
        action: "agent.handoff",
        target: agent.id,
        outcome: "ok",
        reason: `to ${decision.server.id} (${decision.reason}) after ${wait}ms`,
      });
    }
    if (leaving.size) {
      const present = new Set(agents);
      for (const agent of leaving.keys()) if (!present.has(agent)) leaving.delete(agent);
    }
    if (records.length) {
      options.audit?.appendMany(records);
      logger.info("handing agents to their owners", { agents: records.length });
    }
    return records.length;
  };

  let timer: TimerId = clock.setTimeout(function tick() {
    if (stopped) return;
    try {
      check();
    } catch (err) {
      logger.error("handoff check failed", { error: String(err) });
    }
    timer = clock.setTimeout(tick, tickMs);
  }, tickMs);

  return {
    check,
    serversFrame,
    stop() {
      stopped = true;
      clock.clearTimeout(timer);
    },
  };
}
