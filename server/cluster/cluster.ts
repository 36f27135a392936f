/**
 * A server's place in the cluster: SWIM membership (memberlist.ts) over a sealed transport,
 * and the replicated state (state.ts) carried by it — this server's own record (gossip
 * address, URL, health score), the agents connected here, and operator commands. Each local
 * change is written to the state and broadcast; the state is also exchanged whole in every
 * push-pull, so a lost broadcast is repaired within one push-pull interval.
 *
 * @module
 */
import type { Clock } from "../../shared/clock.ts";
import { JwError } from "../../shared/errors.ts";
import { type Logger, silentLogger } from "../../shared/log.ts";
import { type Random, randomId } from "../../shared/random.ts";
import {
  createMemberlist,
  type Member,
  type Memberlist,
  type MemberlistConfig,
} from "./memberlist.ts";
import {
  decodeRecords,
  encodeRecords,
  packState,
  type RecordKind,
  ReplicatedState,
  type ServerRecord,
  type StateChange,
  type StateRecord,
  unpackState,
  type ValueOf,
} from "./state.ts";
import type { Transport } from "./transport.ts";

/** A server of the cluster, as `/v1/members` shows it. */
export interface ClusterMember {
  /** Server id. */
  id: string;
  /** Gossip "host:port". */
  gossip: string;
  /** HTTP base URL, when the server has announced it. */
  url: string | null;
  state: Member["state"];
  incarnation: number;
  /** Its Lifeguard health score as last gossiped (0 = healthy); null when unknown. */
  health: number | null;
  /** The health score agent placement uses (see ServerRecord.settled); null when unknown. */
  settled: number | null;
  /** True for this server. */
  self: boolean;
}

/** Options for {@link startCluster}. */
export interface ClusterOptions {
  /** This server's id (the member name). */
  serverId: string;
  /** This server's base URL for agents and operators. */
  url: string;
  /** A transport already sealed with the cluster's keys. */
  transport: Transport;
  clock: Clock;
  random: Random;
  logger?: Logger;
  /** SWIM settings; memberlist's LAN defaults otherwise. */
  memberlist?: Partial<MemberlistConfig>;
  /** How often this server's health score is checked and re-announced if changed. Default 1 s. */
  healthIntervalMs?: number;
  /** Called when another server joins (or comes back): e.g. to remember its address. */
  onJoin?: (member: Member) => void;
  /**
   * Turns this server's raw health score into the one placement uses (called every health
   * interval with the raw score and the time). Default: the raw score.
   */
  settleHealth?: (raw: number, now: number) => number;
}

/** A running cluster membership. */
export interface Cluster {
  /** The shared records. */
  readonly state: ReplicatedState;
  /** Every server this one knows of, itself first. */
  members(): ClusterMember[];
  /** This server's Lifeguard health score (0 = healthy). */
  healthScore(): number;
  /**
   * Joins the servers at `addresses` ("host:port" gossip addresses).
   * @returns how many answered.
   * @throws JwError `not_connected` when none did.
   */
  join(addresses: readonly string[]): Promise<number>;
  /**
   * Writes a record and gossips it. A record too large for one packet reaches the others in
   * the next push-pull, or at once when `urgent` (a push-pull with every live server).
   */
  publish<K extends RecordKind>(
    kind: K,
    id: string,
    value: ValueOf<K> | null,
    urgent?: boolean,
  ): void;
  /** Subscribes to applied changes (local and remote). */
  onChange(listener: (change: StateChange) => void): () => void;
  /** Counters of the membership layer. */
  stats(): Record<string, number>;
  /** Leaves gracefully (at most `timeoutMs`), then stops. Idempotent. */
  leave(timeoutMs?: number): Promise<void>;
}

/** How often expired command records are forgotten. */
const PRUNE_INTERVAL_MS = 10_000;

/** Starts membership and state replication. Call {@link Cluster.join} to meet others. */
export function startCluster(options: ClusterOptions): Cluster {
  const logger = options.logger ?? silentLogger;
  const state = new ReplicatedState({ node: options.serverId, clock: options.clock });
  // The member metadata is the URL and an id of this start: a server restarted before the
  // others noticed it was gone differs from its former self, so it refutes the old record
  // with a higher incarnation and everyone sees that it came back.
  const meta = new TextEncoder().encode(`${options.url} ${randomId(options.random)}`);

  const applyRemote = (records: StateRecord[]) => {
    const applied = state.mergeAll(records);
    if (applied > 0) logger.debug("applied gossiped records", { applied });
  };

  const list: Memberlist = createMemberlist({
    name: options.serverId,
    transport: options.transport,
    clock: options.clock,
    random: options.random,
    logger: logger.child("gossip"),
    config: options.memberlist,
    meta,
    delegate: {
      notifyUser(bytes) {
        try {
          applyRemote(decodeRecords(bytes));
        } catch (err) {
          logger.debug("dropped a bad state broadcast", { error: String(err) });
        }
      },
      localState: () => packState(state.snapshot()),
      mergeRemoteState(bytes) {
        try {
          applyRemote(unpackState(bytes));
        } catch (err) {
          logger.warn("dropped a bad state exchange", { error: String(err) });
        }
      },
      notifyJoin: (m) => {
        logger.info("server joined", { server: m.name, gossip: m.address });
        options.onJoin?.(m);
      },
      notifyLeave: (m) =>
        logger.info(m.state === "left" ? "server left" : "server failed", { server: m.name }),
    },
  });

  const publish = <K extends RecordKind>(
    kind: K,
    id: string,
    value: ValueOf<K> | null,
    urgent = false,
  ) => {
    const record = state.set(kind, id, value);
    const bytes = encodeRecords([record]);
    if (list.broadcast(bytes)) return;
    if (!urgent) {
      logger.debug("record too large to broadcast; left to push-pull", { kind, id });
      return;
    }
    const others = list.members()
      .filter((m) => m.name !== options.serverId && m.state === "alive")
      .map((m) => m.address);
    if (others.length === 0) return;
    list.join(others).catch((err) =>
      logger.warn("could not hand a large record to every server", { kind, id, error: String(err) })
    );
  };

  const settle = options.settleHealth ?? ((raw: number) => raw);
  let settled = settle(list.healthScore(), options.clock.now());
  const selfRecord = (): ServerRecord => ({
    id: options.serverId,
    gossip: options.transport.address,
    url: options.url,
    health: list.healthScore(),
    settled,
  });
  publish("server", options.serverId, selfRecord());
  let announced = `${list.healthScore()}/${settled}`;
  const healthEvery = options.healthIntervalMs ?? 1000;
  let healthTimer = options.clock.setTimeout(function check() {
    const score = list.healthScore();
    settled = settle(score, options.clock.now());
    if (`${score}/${settled}` !== announced) {
      announced = `${score}/${settled}`;
      publish("server", options.serverId, selfRecord());
    }
    healthTimer = options.clock.setTimeout(check, healthEvery);
  }, healthEvery);

  // Commands expire everywhere by themselves: forget them here once past their time.
  let pruneTimer = options.clock.setTimeout(function prune() {
    const now = options.clock.now();
    for (const c of state.list("command")) {
      if (c.expires < now) state.forget("command", c.id);
    }
    pruneTimer = options.clock.setTimeout(prune, PRUNE_INTERVAL_MS);
  }, PRUNE_INTERVAL_MS);

  let leaving: Promise<void> | undefined;
  return {
    state,
    members() {
      const records = new Map(state.list("server").map((s) => [s.id, s]));
      const out: ClusterMember[] = [];
      for (const m of list.members()) {
        const r = records.get(m.name);
        out.push({
          id: m.name,
          gossip: m.address,
          url: r?.url ?? urlOfMeta(m.meta),
          state: m.state,
          incarnation: m.incarnation,
          health: m.name === options.serverId ? list.healthScore() : r?.health ?? null,
          settled: m.name === options.serverId ? settled : r ? r.settled ?? r.health : null,
          self: m.name === options.serverId,
        });
      }
      return out.sort((a, b) =>
        a.self !== b.self ? (a.self ? -1 : 1) : a.id < b.id ? -1 : a.id > b.id ? 1 : 0
      );
    },
    healthScore: () => list.healthScore(),
    async join(addresses) {
      const others = addresses.filter((a) => a !== options.transport.address);
      if (others.length === 0) {
        throw new JwError("usage", "no address to join other than this server's own");
      }
      return await list.join(others);
    },
    publish,
    onChange: (listener) => state.onChange(listener),
    stats: () => ({ ...list.stats(), ...prefixed("state", state.stats()) }),
    leave(timeoutMs = 2000) {
      return leaving ??= (async () => {
        options.clock.clearTimeout(healthTimer);
        options.clock.clearTimeout(pruneTimer);
        try {
          await list.leave(timeoutMs);
        } catch (err) {
          logger.warn("leaving the cluster failed", { error: String(err) });
        }
        await list.shutdown();
      })();
    },
  };
}

function prefixed(prefix: string, stats: object): Record<string, number> {
  return Object.fromEntries(
    Object.entries(stats).map(([k, v]) => [`${prefix}.${k}`, v as number]),
  );
}

/** The URL in a member's metadata ("URL START-ID"); null when there is none. */
function urlOfMeta(meta: Uint8Array): string | null {
  const url = new TextDecoder().decode(meta).split(" ")[0];
  return url ? url : null;
}
