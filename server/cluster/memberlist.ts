/**
 * Cluster membership by SWIM gossip with the Lifeguard extensions, after hashicorp/memberlist:
 *
 * - **Failure detection.** Every probe interval one member is probed (randomized round
 *   robin: the member list is shuffled at each wrap). A ping that is not acked within the
 *   probe timeout is followed by indirect pings through `indirectChecks` random members,
 *   who relay the target's ack or send a nack when it stays silent. No ack by the end of
 *   the probe interval makes the target suspect.
 * - **Lifeguard.** A local health score ({@link Awareness}) rises when our probes fail with
 *   missing nacks (we may be the slow one) and when we must refute a suspicion of
 *   ourselves, falls with each successful probe, and stretches our probe timeout and
 *   interval. A suspicion ({@link Suspicion}) starts at its longest timeout and shrinks
 *   as other members independently suspect the same node.
 * - **Incarnations.** A member that hears it is suspected or dead bumps its incarnation
 *   above the claim and gossips `alive`, which overrides the claim everywhere.
 * - **Dissemination.** Membership changes are queued broadcasts, piggybacked on pings and
 *   acks and sent every gossip interval to a few random members (and to members that died
 *   recently), each a bounded number of times; packets never exceed the packet limit.
 * - **Anti-entropy.** `join()` and a periodic timer exchange the full state over a
 *   stream (push-pull). A node also retries a push-pull with a random member it saw fail
 *   (every `reconnectInterval`), which is how two sides of a healed partition find each
 *   other again: the exchange shows each side that the other declared it dead, both
 *   refute with a higher incarnation, and their alive messages spread through gossip.
 *
 * Unknown nodes: an `alive` about an unknown node adds it; `suspect` and `dead` about an
 * unknown node are ignored. Malformed packets and streams are dropped and counted.
 *
 * Where we differ from memberlist: the push-pull responder merges before it replies (so a
 * refutation travels back at once); a suspicion or death claim about us at an incarnation
 * we already refuted is answered with our alive message, straight to its sender; an alive
 * message is never piggybacked to the node it is about; user broadcasts carry an id and
 * every member re-gossips them once; helpers send their nack after 80% of the probe
 * timeout so it arrives before the prober gives up; failed members are retried
 * (reconnect), as Serf does; the health score stretches the probe timeout as well as the
 * probe interval; there is no TCP fallback ping.
 *
 * @module
 */
import type { Clock, TimerId } from "../../shared/clock.ts";
import { isJwError, JwError } from "../../shared/errors.ts";
import { type Logger, silentLogger } from "../../shared/log.ts";
import type { Random } from "../../shared/random.ts";
import { Awareness } from "./awareness.ts";
import { TransmitLimitedQueue } from "./broadcast.ts";
import {
  type AliveMessage,
  COMPOUND_HEADER_OVERHEAD,
  COMPOUND_MAX_PARTS,
  COMPOUND_PART_OVERHEAD,
  type DeadMessage,
  decodePacket,
  decodePushPull,
  encodeCompound,
  encodeMessage,
  encodePushPull,
  type IndirectPingMessage,
  type MemberState,
  META_LIMIT,
  NAME_LIMIT,
  type PushPullMessage,
  type SingleMessage,
  type SuspectMessage,
  UINT32_MAX,
  USER_ID_LENGTH,
} from "./messages.ts";
import { Suspicion } from "./suspicion.ts";
import { DEFAULT_PACKET_LIMIT, type Packet, type Stream, type Transport } from "./transport.ts";

export type { MemberState } from "./messages.ts";

/** Timing and sizing of the protocol. Every duration is in milliseconds. */
export interface MemberlistConfig {
  /**
   * Time between two probes (one member each). Shorter detects failures sooner at the cost
   * of more traffic. Stretched by the health score. Default 1000.
   */
  probeInterval: number;
  /**
   * How long to wait for a direct ack before asking others to probe indirectly; should be
   * near the network's 99th-percentile round trip. Stretched by the health score; must be
   * below `probeInterval`. Default 500.
   */
  probeTimeout: number;
  /** Members asked to probe indirectly when a direct probe fails. 0 disables. Default 3. */
  indirectChecks: number;
  /**
   * Suspicion multiplier: the shortest suspicion timeout is
   * `suspicionMult * max(1, log10(n)) * probeInterval` for n members. Higher is more
   * tolerant of slow nodes and slower to declare a failure. Default 4.
   */
  suspicionMult: number;
  /**
   * The longest suspicion timeout, used while no other member corroborates, is this
   * times the shortest. Default 6.
   */
  suspicionMaxTimeoutMult: number;
  /** A broadcast is sent `retransmitMult * ceil(log10(n + 1))` times. Default 4. */
  retransmitMult: number;
  /** Time between gossip rounds (only when something is queued). Default 200. */
  gossipInterval: number;
  /** Members sent to per gossip round. 0 disables gossip rounds. Default 3. */
  gossipNodes: number;
  /** Members declared dead keep receiving gossip this long, so they can refute. Default 30000. */
  gossipToTheDeadTime: number;
  /**
   * Time between full state exchanges with one random member; beyond 32 members it is
   * multiplied by `ceil(log2(n) - log2(32)) + 1`. 0 disables. Default 30000.
   */
  pushPullInterval: number;
  /** The health score runs 0..awarenessMaxMultiplier-1. Default 8. */
  awarenessMaxMultiplier: number;
  /**
   * A dead member's name may be taken by a node at another address after this long;
   * 0 means only once the dead member is reaped. Members that left may be replaced at
   * once. Default 0.
   */
  deadNodeReclaimTime: number;
  /** Dead and left members are forgotten this long after their state changed. Default 30000. */
  reapTime: number;
  /**
   * Time between push-pull attempts with one random member seen failing (not leaving), to
   * heal partitions. 0 disables. Default 30000.
   */
  reconnectInterval: number;
  /** A failed member is retried for this long after it failed. Default 86400000 (24 h). */
  reconnectTimeout: number;
  /** Deadline of each stream step (connect, send, receive) of a push-pull. Default 10000. */
  streamTimeout: number;
  /** Largest packet we build, in bytes. Default {@link DEFAULT_PACKET_LIMIT} (1400). */
  packetLimit: number;
  /**
   * Ids of user broadcasts seen are remembered this long (at most 65536 of them), so each
   * is delivered and re-gossiped once per member. Default 60000.
   */
  userMessageMemory: number;
}

/** memberlist's LAN profile (plus our reaping and reconnect settings). */
export const LAN_CONFIG: Readonly<MemberlistConfig> = Object.freeze({
  probeInterval: 1000,
  probeTimeout: 500,
  indirectChecks: 3,
  suspicionMult: 4,
  suspicionMaxTimeoutMult: 6,
  retransmitMult: 4,
  gossipInterval: 200,
  gossipNodes: 3,
  gossipToTheDeadTime: 30_000,
  pushPullInterval: 30_000,
  awarenessMaxMultiplier: 8,
  deadNodeReclaimTime: 0,
  reapTime: 30_000,
  reconnectInterval: 30_000,
  reconnectTimeout: 24 * 3600_000,
  streamTimeout: 10_000,
  packetLimit: DEFAULT_PACKET_LIMIT,
  userMessageMemory: 60_000,
});

/** One member as seen by this node. */
export interface Member {
  /** Unique name in the cluster. */
  name: string;
  /** Gossip "host:port". */
  address: string;
  /** Opaque metadata (at most {@link META_LIMIT} bytes), e.g. the server's HTTP URL. */
  meta: Uint8Array;
  /** alive, suspect, dead (failed) or left (gracefully). */
  state: MemberState;
  /** The member's incarnation number: higher claims override lower ones. */
  incarnation: number;
}

/**
 * Hooks for the layer above. All optional; called synchronously from the event loop, so
 * they must not block. An exception is logged and otherwise ignored. Events concern other
 * members only, never the local node.
 */
export interface MemberlistDelegate {
  /** A member became alive (new, or back from dead/left). */
  notifyJoin?(member: Member): void;
  /** A member was declared dead, or left (`member.state` tells which). */
  notifyLeave?(member: Member): void;
  /** An alive member changed its metadata. */
  notifyUpdate?(member: Member): void;
  /** A user broadcast arrived (see {@link Memberlist.broadcast}). */
  notifyUser?(data: Uint8Array): void;
  /** Opaque state sent with each push-pull; `join` when the exchange is a join. */
  localState?(join: boolean): Uint8Array;
  /** The peer's opaque state from a push-pull. */
  mergeRemoteState?(data: Uint8Array, join: boolean): void;
}

/** Counters since start. */
export interface MemberlistStats {
  /** Probes started. */
  probes: number;
  /** Probes that got no ack at all. */
  probesFailed: number;
  /** Times this node started suspecting a member. */
  suspicions: number;
  /** Times this node refuted a suspicion or death claim about itself. */
  refutations: number;
  packetsSent: number;
  packetsReceived: number;
  bytesSent: number;
  bytesReceived: number;
  /** Malformed packets and stream messages dropped. */
  invalidMessages: number;
  /** Push-pull exchanges completed (either side). */
  pushPulls: number;
  /** Push-pull exchanges this node started that failed. */
  pushPullsFailed: number;
  /** Push-pull attempts with a failed member (partition healing). */
  reconnects: number;
}

/** What {@link createMemberlist} needs. */
export interface MemberlistOptions {
  /** This node's unique name (1..128 characters). */
  name: string;
  /** Packets and streams; owned by the memberlist from now on (closed by shutdown). */
  transport: Transport;
  clock: Clock;
  random: Random;
  /** Default: silent. */
  logger?: Logger;
  /** Overrides of {@link LAN_CONFIG} (undefined values ignored); unknown keys are rejected. */
  config?: Partial<MemberlistConfig>;
  delegate?: MemberlistDelegate;
  /** Initial metadata (at most {@link META_LIMIT} bytes). Default empty. */
  meta?: Uint8Array;
}

/**
 * A running member of the cluster. Single-threaded: every method is called from the event
 * loop; none blocks except the promise-returning ones.
 */
export interface Memberlist extends AsyncDisposable {
  /** Every known member, this node included, sorted by name (dead and left until reaped). */
  members(): Member[];
  /** This node as others should see it. */
  localNode(): Member;
  /** The Lifeguard health score: 0 is healthy, up to awarenessMaxMultiplier - 1. */
  healthScore(): number;
  /** Members alive or suspect, this node included (unless it left). */
  numMembers(): number;
  /**
   * Exchanges full state (push-pull, with the join flag) with each address in parallel.
   * Our own address is skipped.
   * @returns how many exchanges succeeded.
   * @throws JwError `not_connected` when none did (the message lists each failure),
   *   `closed` after shutdown.
   */
  join(addresses: string[]): Promise<number>;
  /**
   * Leaves gracefully: gossips that this node is dead by its own word (others mark it
   * `left`, not `dead`) and waits until that broadcast was sent its full count. Returns
   * at once when no other member is alive. The node keeps answering probes until
   * {@link shutdown}.
   * @throws JwError `timeout` when the broadcast was not sent within `timeoutMs`.
   */
  leave(timeoutMs: number): Promise<void>;
  /**
   * Gossips opaque bytes to every member, delivered once to each by
   * {@link MemberlistDelegate.notifyUser} (not to this node). Best effort: every member
   * re-gossips it a bounded number of times, like membership changes, so a member that
   * is unreachable meanwhile misses it.
   * @returns false (and queues nothing) when the message cannot fit in one packet; such
   *   data belongs in the push-pull state instead.
   */
  broadcast(data: Uint8Array): boolean;
  /**
   * Replaces this node's metadata, bumps its incarnation and gossips it.
   * @throws JwError `invalid_args` past {@link META_LIMIT} bytes.
   */
  setMeta(meta: Uint8Array): void;
  /** Stops every timer, closes the transport. Idempotent; no leave message is sent. */
  shutdown(): Promise<void>;
  /** A copy of the counters. */
  stats(): MemberlistStats;
}

interface NodeState {
  name: string;
  address: string;
  meta: Uint8Array;
  incarnation: number;
  state: MemberState;
  /** Clock time of the last state change. */
  stateChange: number;
}

interface AckHandler {
  ack(): void;
  nack(): void;
}

/** Most user message ids remembered. */
const SEEN_USER_LIMIT = 65_536;

/** Above this cluster size the push-pull interval grows (memberlist's threshold). */
const PUSH_PULL_SCALE_THRESHOLD = 32;

/** The push-pull interval for a cluster of n: scaled by `ceil(log2(n) - log2(32)) + 1` past 32. */
export function pushPullScale(intervalMs: number, n: number): number {
  if (n <= PUSH_PULL_SCALE_THRESHOLD) return intervalMs;
  return intervalMs * (Math.ceil(Math.log2(n) - Math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1);
}

/**
 * The shortest suspicion timeout for a cluster of n:
 * `suspicionMult * max(1, log10(max(1, n))) * probeInterval` (memberlist's formula; the
 * floor of 1 keeps small clusters from timing out faster than a few probe rounds).
 */
export function suspicionMinTimeout(suspicionMult: number, n: number, probeInterval: number) {
  const nodeScale = Math.max(1, Math.log10(Math.max(1, n)));
  return Math.floor(suspicionMult * nodeScale * probeInterval);
}

function checkConfig(config: MemberlistConfig): void {
  const bad = (key: string, rule: string) => {
    throw new JwError(
      "config",
      `cluster config ${key} must be ${rule}, got ${
        (config as unknown as Record<string, unknown>)[key]
      }`,
      { detail: { key } },
    );
  };
  for (const [key, value] of Object.entries(config)) {
    if (!Object.hasOwn(LAN_CONFIG, key)) {
      throw new JwError("config", `unknown cluster config key ${key}`, { detail: { key } });
    }
    if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
      bad(key, "a finite number >= 0");
    }
  }
  const ints = [
    "indirectChecks",
    "suspicionMult",
    "suspicionMaxTimeoutMult",
    "retransmitMult",
    "gossipNodes",
    "awarenessMaxMultiplier",
    "packetLimit",
  ] as const;
  for (const key of ints) if (!Number.isInteger(config[key])) bad(key, "an integer");
  for (
    const key of [
      "probeInterval",
      "probeTimeout",
      "gossipInterval",
      "suspicionMult",
      "suspicionMaxTimeoutMult",
      "retransmitMult",
      "awarenessMaxMultiplier",
      "streamTimeout",
    ] as const
  ) if (config[key] <= 0) bad(key, "> 0");
  if (config.probeTimeout >= config.probeInterval) bad("probeTimeout", "below probeInterval");
  if (config.packetLimit < 256) bad("packetLimit", ">= 256");
}

/**
 * Starts a member: takes over the transport's handlers, queues an alive message about
 * itself and starts the probe, gossip, push-pull and reconnect timers (each with a
 * random initial stagger). Call {@link Memberlist.join} to join a cluster.
 * @throws JwError `config` for a bad name, metadata or config value.
 */
export function createMemberlist(options: MemberlistOptions): Memberlist {
  return new MemberlistImpl(options);
}

class MemberlistImpl implements Memberlist {
  readonly #name: string;
  readonly #transport: Transport;
  readonly #clock: Clock;
  readonly #random: Random;
  readonly #log: Logger;
  readonly #config: MemberlistConfig;
  readonly #delegate: MemberlistDelegate;
  readonly #awareness: Awareness;
  readonly #queue: TransmitLimitedQueue;
  readonly #userQueue: TransmitLimitedQueue;
  readonly #nodes = new Map<string, NodeState>();
  readonly #self: NodeState;
  readonly #suspicions = new Map<string, Suspicion>();
  readonly #acks = new Map<number, AckHandler>();
  readonly #timers = new Set<TimerId>();
  /** Members seen failing, by name: candidates for reconnect. */
  readonly #failed = new Map<string, { address: string; since: number }>();
  /** Ids of user messages seen, to their expiry time (in insertion order). */
  readonly #seenUser = new Map<string, number>();
  #probeOrder: string[] = [];
  #probeIndex = 0;
  #seq = 0;
  #leaving = false;
  #closed = false;
  readonly #stats: MemberlistStats = {
    probes: 0,
    probesFailed: 0,
    suspicions: 0,
    refutations: 0,
    packetsSent: 0,
    packetsReceived: 0,
    bytesSent: 0,
    bytesReceived: 0,
    invalidMessages: 0,
    pushPulls: 0,
    pushPullsFailed: 0,
    reconnects: 0,
  };

  constructor(options: MemberlistOptions) {
    const overrides = Object.entries(options.config ?? {}).filter(([, v]) => v !== undefined);
    const config = { ...LAN_CONFIG, ...Object.fromEntries(overrides) } as MemberlistConfig;
    checkConfig(config);
    if (options.name.length === 0 || options.name.length > NAME_LIMIT) {
      throw new JwError("config", `node name must be 1..${NAME_LIMIT} characters`);
    }
    const meta = options.meta ?? new Uint8Array();
    if (meta.length > META_LIMIT) {
      throw new JwError("config", `node metadata must be at most ${META_LIMIT} bytes`);
    }
    this.#name = options.name;
    this.#transport = options.transport;
    this.#clock = options.clock;
    this.#random = options.random;
    this.#log = options.logger ?? silentLogger;
    this.#config = config;
    this.#delegate = options.delegate ?? {};
    this.#awareness = new Awareness(config.awarenessMaxMultiplier);
    const numNodes = () => this.#nodes.size;
    this.#queue = new TransmitLimitedQueue({ retransmitMult: config.retransmitMult, numNodes });
    this.#userQueue = new TransmitLimitedQueue({ retransmitMult: config.retransmitMult, numNodes });
    this.#self = {
      name: this.#name,
      address: this.#transport.address,
      meta: meta.slice(),
      incarnation: 1,
      state: "alive",
      stateChange: this.#clock.now(),
    };
    this.#nodes.set(this.#name, this.#self);
    this.#probeOrder = [this.#name];
    this.#broadcastSelf();

    this.#transport.onPacket((p) => this.#onPacket(p));
    this.#transport.onStream((s) => this.#onStream(s));
    const stagger = (ms: number) => Math.floor(this.#random.float() * ms);
    this.#after(stagger(config.probeInterval), () => this.#probeTick());
    if (config.gossipNodes > 0) {
      this.#after(stagger(config.gossipInterval), () => this.#gossipTick());
    }
    if (config.pushPullInterval > 0) {
      this.#after(stagger(config.pushPullInterval), () => this.#pushPullTick());
    }
    if (config.reconnectInterval > 0) {
      this.#after(stagger(config.reconnectInterval), () => this.#reconnectTick());
    }
  }

  // ---- public API ----

  members(): Member[] {
    return [...this.#nodes.values()].map(toMember).sort((a, b) => a.name < b.name ? -1 : 1);
  }

  localNode(): Member {
    return toMember(this.#self);
  }

  healthScore(): number {
    return this.#awareness.score();
  }

  numMembers(): number {
    let n = 0;
    for (const s of this.#nodes.values()) if (s.state === "alive" || s.state === "suspect") n++;
    return n;
  }

  async join(addresses: string[]): Promise<number> {
    if (this.#closed) throw new JwError("closed", "memberlist is shut down");
    const targets = [...new Set(addresses)].filter((a) => a !== this.#transport.address);
    const results = await Promise.allSettled(targets.map((a) => this.#pushPull(a, true)));
    const ok = results.filter((r) => r.status === "fulfilled").length;
    if (ok === 0) {
      const why = results.map((r, i) =>
        `${targets[i]}: ${r.status === "rejected" ? errorText(r.reason) : "ok"}`
      );
      throw new JwError(
        "not_connected",
        `could not join the cluster (${why.length === 0 ? "no addresses" : why.join("; ")})`,
      );
    }
    return ok;
  }

  leave(timeoutMs: number): Promise<void> {
    if (this.#closed) return Promise.reject(new JwError("closed", "memberlist is shut down"));
    if (this.#self.state === "left") return Promise.resolve();
    this.#leaving = true;
    const others = [...this.#nodes.values()].some((s) =>
      s.name !== this.#name && (s.state === "alive" || s.state === "suspect")
    );
    return new Promise((resolve, reject) => {
      const timer = others
        ? this.#after(timeoutMs, () => {
          reject(new JwError("timeout", `leave message not sent within ${timeoutMs} ms`));
        })
        : undefined;
      this.#deadNode(
        { type: "dead", incarnation: this.#self.incarnation, node: this.#name, from: this.#name },
        () => {
          if (timer !== undefined) this.#cancel(timer);
          resolve();
        },
      );
      if (!others) resolve();
    });
  }

  broadcast(data: Uint8Array): boolean {
    const id = this.#random.bytes(USER_ID_LENGTH);
    const message = encodeMessage({ type: "user", id, data: data.slice() });
    const room = this.#config.packetLimit - COMPOUND_HEADER_OVERHEAD - COMPOUND_PART_OVERHEAD;
    if (message.length > room) return false;
    this.#seenBefore(id);
    this.#userQueue.queue({ message });
    return true;
  }

  setMeta(meta: Uint8Array): void {
    if (meta.length > META_LIMIT) {
      throw new JwError("invalid_args", `node metadata must be at most ${META_LIMIT} bytes`);
    }
    this.#self.meta = meta.slice();
    this.#self.incarnation = Math.min(UINT32_MAX, this.#self.incarnation + 1);
    this.#broadcastSelf();
  }

  async shutdown(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const id of this.#timers) this.#clock.clearTimeout(id);
    this.#timers.clear();
    for (const s of this.#suspicions.values()) s.cancel();
    this.#suspicions.clear();
    this.#acks.clear();
    this.#queue.reset();
    this.#userQueue.reset();
    await this.#transport.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.shutdown();
  }

  stats(): MemberlistStats {
    return { ...this.#stats };
  }

  // ---- timers ----

  #after(ms: number, fn: () => void): TimerId {
    const id = this.#clock.setTimeout(() => {
      this.#timers.delete(id);
      if (!this.#closed) fn();
    }, ms);
    this.#timers.add(id);
    return id;
  }

  #cancel(id: TimerId): void {
    this.#clock.clearTimeout(id);
    this.#timers.delete(id);
  }

  // ---- sending ----

  /**
   * Sends messages to address `to` as one packet, filling the room left with queued
   * broadcasts (membership first, then user broadcasts). Never exceeds the packet limit.
   * `toName` is the destination's node name when known (to skip telling it about itself).
   */
  #send(to: string, messages: Uint8Array[], toName?: string): void {
    let room = this.#config.packetLimit - COMPOUND_HEADER_OVERHEAD;
    for (const m of messages) room -= m.length + COMPOUND_PART_OVERHEAD;
    const extra = this.#takeBroadcasts(room, COMPOUND_MAX_PARTS - messages.length, toName);
    const parts = [...messages, ...extra];
    this.#sendRaw(to, parts.length === 1 ? parts[0] : encodeCompound(parts));
  }

  #takeBroadcasts(room: number, maxParts: number, toName?: string): Uint8Array[] {
    if (room <= 0 || maxParts <= 0) return [];
    const out = this.#queue.getBroadcasts(COMPOUND_PART_OVERHEAD, room, maxParts, toName);
    for (const m of out) room -= m.length + COMPOUND_PART_OVERHEAD;
    if (room > 0 && out.length < maxParts) {
      out.push(
        ...this.#userQueue.getBroadcasts(COMPOUND_PART_OVERHEAD, room, maxParts - out.length),
      );
    }
    return out;
  }

  #sendRaw(to: string, data: Uint8Array): void {
    this.#stats.packetsSent++;
    this.#stats.bytesSent += data.length;
    this.#transport.sendPacket(to, data);
  }

  #broadcastSelf(): void {
    const s = this.#self;
    this.#queue.queue({
      key: s.name,
      notFor: s.name,
      message: encodeMessage({
        type: "alive",
        incarnation: s.incarnation,
        node: s.name,
        address: s.address,
        meta: s.meta,
      }),
    });
  }

  #nextSeq(): number {
    this.#seq = this.#seq >= UINT32_MAX ? 1 : this.#seq + 1;
    return this.#seq;
  }

  // ---- receiving ----

  #onPacket(packet: Packet): void {
    if (this.#closed) return;
    this.#stats.packetsReceived++;
    this.#stats.bytesReceived += packet.data.length;
    let messages: SingleMessage[];
    try {
      messages = decodePacket(packet.data);
    } catch (err) {
      this.#stats.invalidMessages++;
      this.#log.debug("dropped a malformed packet", { from: packet.from, error: errorText(err) });
      return;
    }
    for (const m of messages) {
      try {
        this.#handle(m, packet.from);
      } catch (err) {
        this.#log.error("failed to handle a gossip message", {
          type: m.type,
          from: packet.from,
          error: errorText(err),
        });
      }
    }
  }

  #handle(m: SingleMessage, from: string): void {
    switch (m.type) {
      case "ping":
        if (m.node !== this.#name) {
          this.#log.debug("ping for another node ignored", { node: m.node, from });
          return;
        }
        this.#send(from, [encodeMessage({ type: "ack", seq: m.seq })], this.#nameAt(from));
        return;
      case "indirect-ping":
        return this.#onIndirectPing(m, from);
      case "ack":
        return this.#acks.get(m.seq)?.ack();
      case "nack":
        return this.#acks.get(m.seq)?.nack();
      case "suspect":
        this.#answerStaleClaim(m, from);
        return this.#suspectNode(m);
      case "alive":
        return this.#aliveNode(m);
      case "dead":
        this.#answerStaleClaim(m, from);
        return this.#deadNode(m);
      case "user":
        if (this.#seenBefore(m.id)) return;
        this.#userQueue.queue({ message: encodeMessage(m) });
        return this.#notify("notifyUser", m.data);
    }
  }

  /**
   * A suspicion or death claim about us at an incarnation we already refuted means the
   * sender missed our refutation (gossip is lossy). We answer with our current alive,
   * straight back, so that it does not go on to declare us dead. (memberlist ignores such
   * claims and relies on later gossip or push-pull.)
   */
  #answerStaleClaim(m: SuspectMessage | DeadMessage, from: string): void {
    const self = this.#self;
    if (m.node !== this.#name || m.incarnation >= self.incarnation || self.state !== "alive") {
      return;
    }
    this.#send(from, [encodeMessage({
      type: "alive",
      incarnation: self.incarnation,
      node: self.name,
      address: self.address,
      meta: self.meta,
    })]);
  }

  /** Remembers a user message id; true when it was already known. */
  #seenBefore(id: Uint8Array): boolean {
    const now = this.#clock.now();
    for (const [key, expiry] of this.#seenUser) {
      if (expiry > now && this.#seenUser.size < SEEN_USER_LIMIT) break;
      this.#seenUser.delete(key);
    }
    const key = String.fromCharCode(...id);
    if (this.#seenUser.has(key)) return true;
    this.#seenUser.set(key, now + this.#config.userMessageMemory);
    return false;
  }

  #notify<K extends "notifyJoin" | "notifyLeave" | "notifyUpdate" | "notifyUser">(
    hook: K,
    arg: K extends "notifyUser" ? Uint8Array : Member,
  ): void {
    const fn = this.#delegate[hook] as ((a: unknown) => void) | undefined;
    if (!fn) return;
    try {
      fn.call(this.#delegate, arg);
    } catch (err) {
      this.#log.error(`delegate ${hook} failed`, { error: errorText(err) });
    }
  }

  // ---- probing ----

  #probeTick(): void {
    const start = this.#clock.now();
    const next = () => {
      const wait = Math.max(0, start + this.#config.probeInterval - this.#clock.now());
      this.#after(wait, () => this.#probeTick());
    };
    const target = this.#nextProbeTarget();
    if (!target) return next();
    this.#probeNode(target, next);
  }

  #nextProbeTarget(): NodeState | undefined {
    for (let checked = 0; checked <= this.#probeOrder.length + 1; checked++) {
      if (this.#probeIndex >= this.#probeOrder.length) {
        this.#resetProbeOrder();
        continue;
      }
      const s = this.#nodes.get(this.#probeOrder[this.#probeIndex++]);
      if (!s || s.name === this.#name || s.state === "dead" || s.state === "left") continue;
      return s;
    }
    return undefined;
  }

  /** At each wrap of the round robin: forget long-dead members, reshuffle the rest. */
  #resetProbeOrder(): void {
    const now = this.#clock.now();
    for (const [name, s] of this.#nodes) {
      if (
        name !== this.#name && (s.state === "dead" || s.state === "left") &&
        now - s.stateChange >= this.#config.reapTime
      ) {
        this.#nodes.delete(name);
      }
    }
    this.#probeOrder = shuffle([...this.#nodes.keys()], this.#random);
    this.#probeIndex = 0;
  }

  #probeNode(target: NodeState, done: () => void): void {
    const seq = this.#nextSeq();
    this.#stats.probes++;
    const interval = this.#awareness.scale(this.#config.probeInterval);
    const timeout = this.#awareness.scale(this.#config.probeTimeout);
    let expectedNacks = 0;
    let nacks = 0;
    let finished = false;
    const timers: TimerId[] = [];
    const finish = (acked: boolean) => {
      if (finished) return;
      finished = true;
      for (const t of timers) this.#cancel(t);
      this.#acks.delete(seq);
      if (acked) {
        this.#awareness.apply(-1);
      } else {
        // Missing nacks mean the helpers could not reach us either: likely our fault.
        this.#awareness.apply(expectedNacks > 0 ? Math.max(0, expectedNacks - nacks) : 1);
        this.#stats.probesFailed++;
        const s = this.#nodes.get(target.name);
        if (s && s.state !== "dead" && s.state !== "left") {
          this.#log.debug("probe failed; suspecting", { node: s.name });
          this.#suspectNode({
            type: "suspect",
            incarnation: s.incarnation,
            node: s.name,
            from: this.#name,
          });
        }
      }
      done();
    };
    this.#acks.set(seq, { ack: () => finish(true), nack: () => nacks++ });

    const messages = [encodeMessage({ type: "ping", seq, node: target.name })];
    if (target.state !== "alive") {
      // Tell a suspect it is suspected, so it can refute at once.
      messages.push(encodeMessage({
        type: "suspect",
        incarnation: target.incarnation,
        node: target.name,
        from: this.#name,
      }));
    }
    this.#send(target.address, messages, target.name);

    timers.push(this.#after(timeout, () => {
      if (finished) return;
      const helpers = this.#randomNodes(
        this.#config.indirectChecks,
        (s) => s.name !== this.#name && s.name !== target.name && s.state === "alive",
      );
      const request = encodeMessage({
        type: "indirect-ping",
        seq,
        target: target.name,
        address: target.address,
        nack: true,
      });
      for (const h of helpers) {
        expectedNacks++;
        this.#send(h.address, [request], h.name);
      }
    }));
    timers.push(this.#after(interval, () => finish(false)));
  }

  /**
   * Probes `m.target` for a peer and relays the ack. When asked, sends a nack after 80% of
   * the probe timeout (as the Lifeguard paper suggests) so it reaches the requester before
   * its probe interval ends.
   */
  #onIndirectPing(m: IndirectPingMessage, from: string): void {
    const seq = this.#nextSeq();
    let answered = false;
    const nackTimer = m.nack
      ? this.#after(Math.floor(this.#config.probeTimeout * 0.8), () => {
        if (!answered) this.#send(from, [encodeMessage({ type: "nack", seq: m.seq })]);
      })
      : undefined;
    const expiry = this.#after(this.#config.probeTimeout, () => this.#acks.delete(seq));
    this.#acks.set(seq, {
      ack: () => {
        answered = true;
        this.#acks.delete(seq);
        this.#cancel(expiry);
        if (nackTimer !== undefined) this.#cancel(nackTimer);
        this.#send(from, [encodeMessage({ type: "ack", seq: m.seq })]);
      },
      nack: () => {},
    });
    this.#send(m.address, [encodeMessage({ type: "ping", seq, node: m.target })], m.target);
  }

  /** The name of the member at `address`, if known. */
  #nameAt(address: string): string | undefined {
    for (const s of this.#nodes.values()) if (s.address === address) return s.name;
    return undefined;
  }

  /** Up to k distinct random members passing `keep`. */
  #randomNodes(k: number, keep: (s: NodeState) => boolean): NodeState[] {
    const candidates = [...this.#nodes.values()].filter(keep);
    return shuffle(candidates, this.#random).slice(0, k);
  }

  // ---- gossip ----

  #gossipTick(): void {
    this.#after(this.#config.gossipInterval, () => this.#gossipTick());
    const now = this.#clock.now();
    const targets = this.#randomNodes(this.#config.gossipNodes, (s) => {
      if (s.name === this.#name) return false;
      if (s.state === "alive" || s.state === "suspect") return true;
      return s.state === "dead" && now - s.stateChange <= this.#config.gossipToTheDeadTime;
    });
    for (const t of targets) {
      const parts = this.#takeBroadcasts(
        this.#config.packetLimit - COMPOUND_HEADER_OVERHEAD,
        COMPOUND_MAX_PARTS,
        t.name,
      );
      if (parts.length === 0) continue;
      this.#sendRaw(t.address, parts.length === 1 ? parts[0] : encodeCompound(parts));
    }
  }

  // ---- state changes ----

  #aliveNode(a: AliveMessage): void {
    const now = this.#clock.now();
    let state = this.#nodes.get(a.node);
    const isLocal = a.node === this.#name;
    let replaces = false;
    if (state && state.address !== a.address) {
      const reclaimable = this.#config.deadNodeReclaimTime > 0 &&
        now - state.stateChange > this.#config.deadNodeReclaimTime;
      if (!isLocal && (state.state === "left" || (state.state === "dead" && reclaimable))) {
        this.#log.info("member now at a new address", {
          node: a.node,
          old: state.address,
          address: a.address,
        });
        replaces = true;
      } else {
        this.#log.warn("conflicting address for a member", {
          node: a.node,
          ours: state.address,
          theirs: a.address,
          state: state.state,
        });
        return;
      }
    }
    if (state && !replaces) {
      if (isLocal ? a.incarnation < state.incarnation : a.incarnation <= state.incarnation) return;
    }
    if (isLocal) {
      // Someone claims something about us: ignore an exact echo, else assert ourselves.
      if (a.incarnation === this.#self.incarnation && bytesEqual(a.meta, this.#self.meta)) return;
      if (this.#self.state !== "left") this.#refute(a.incarnation);
      return;
    }
    const isNew = state === undefined;
    if (!state) {
      state = {
        name: a.node,
        address: a.address,
        meta: a.meta,
        incarnation: a.incarnation,
        state: "dead",
        stateChange: now,
      };
      this.#nodes.set(a.node, state);
      // Insert at a random place so that new members are probed soon on average.
      const at = Math.floor(this.#random.float() * (this.#probeOrder.length + 1));
      this.#probeOrder.splice(at, 0, a.node);
      if (at < this.#probeIndex) this.#probeIndex++;
    }
    this.#suspicions.get(a.node)?.cancel();
    this.#suspicions.delete(a.node);
    this.#failed.delete(a.node);
    this.#queue.queue({ key: a.node, notFor: a.node, message: encodeMessage(a) });

    const oldState = isNew ? "dead" : state.state;
    const oldMeta = state.meta;
    state.incarnation = a.incarnation;
    state.meta = a.meta;
    state.address = a.address;
    if (state.state !== "alive" || isNew) {
      state.state = "alive";
      state.stateChange = now;
    }
    if (oldState === "dead" || oldState === "left") {
      this.#log.info("member joined", { node: a.node, address: a.address });
      this.#notify("notifyJoin", toMember(state));
    } else if (!bytesEqual(oldMeta, state.meta)) {
      this.#notify("notifyUpdate", toMember(state));
    }
  }

  #suspectNode(s: SuspectMessage): void {
    const state = this.#nodes.get(s.node);
    if (!state || s.incarnation < state.incarnation) return;
    const running = this.#suspicions.get(s.node);
    if (running) {
      // Another independent suspicion: shortens the timer and is worth re-gossiping.
      if (running.confirm(s.from)) this.#queue.queue({ key: s.node, message: encodeMessage(s) });
      return;
    }
    if (state.state !== "alive") return;
    if (s.node === this.#name) {
      if (this.#self.state !== "left") this.#refute(s.incarnation);
      return;
    }
    this.#queue.queue({ key: s.node, message: encodeMessage(s) });
    const changed = this.#clock.now();
    state.incarnation = s.incarnation;
    state.state = "suspect";
    state.stateChange = changed;
    this.#stats.suspicions++;
    this.#log.debug("member suspected", { node: s.node, by: s.from });

    const n = this.#nodes.size;
    // Expect confirmations from all but ourselves and the suspect, up to suspicionMult - 2,
    // so the nominal timeout is reached two probe intervals short of the multiplier.
    let k = this.#config.suspicionMult - 2;
    if (n - 2 < k) k = 0;
    const minMs = suspicionMinTimeout(this.#config.suspicionMult, n, this.#config.probeInterval);
    const maxMs = this.#config.suspicionMaxTimeoutMult * minMs;
    this.#suspicions.set(
      s.node,
      new Suspicion({
        clock: this.#clock,
        from: s.from,
        k,
        minMs,
        maxMs,
        onTimeout: (confirmations) => {
          this.#suspicions.delete(s.node);
          if (this.#closed) return;
          const now = this.#nodes.get(s.node);
          if (now && now.state === "suspect" && now.stateChange === changed) {
            this.#log.info("suspect declared dead", { node: s.node, confirmations });
            this.#deadNode({
              type: "dead",
              incarnation: now.incarnation,
              node: s.node,
              from: this.#name,
            });
          }
        },
      }),
    );
  }

  #deadNode(d: DeadMessage, sent?: () => void): void {
    const state = this.#nodes.get(d.node);
    if (!state || d.incarnation < state.incarnation) return;
    this.#suspicions.get(d.node)?.cancel();
    this.#suspicions.delete(d.node);
    if (state.state === "dead" || state.state === "left") return;
    if (d.node === this.#name && !this.#leaving) {
      this.#refute(d.incarnation);
      return;
    }
    this.#queue.queue({ key: d.node, message: encodeMessage(d), finished: sent });
    state.incarnation = d.incarnation;
    state.state = d.node === d.from ? "left" : "dead";
    state.stateChange = this.#clock.now();
    if (d.node === this.#name) return;
    if (state.state === "dead") {
      this.#failed.set(d.node, { address: state.address, since: state.stateChange });
    } else {
      this.#failed.delete(d.node);
    }
    this.#log.info(state.state === "left" ? "member left" : "member failed", { node: d.node });
    this.#notify("notifyLeave", toMember(state));
  }

  /** Asserts we are alive with an incarnation above `accused`. */
  #refute(accused: number): void {
    const inc = Math.min(UINT32_MAX, Math.max(this.#self.incarnation + 1, accused + 1));
    this.#self.incarnation = inc;
    this.#awareness.apply(1);
    this.#stats.refutations++;
    this.#log.debug("refuting a claim about ourselves", { incarnation: inc });
    this.#broadcastSelf();
  }

  // ---- push-pull ----

  #localState(join: boolean): PushPullMessage {
    let userState: Uint8Array = new Uint8Array();
    if (this.#delegate.localState) {
      try {
        userState = this.#delegate.localState(join);
      } catch (err) {
        this.#log.error("delegate localState failed", { error: errorText(err) });
      }
    }
    return {
      type: "push-pull",
      join,
      members: [...this.#nodes.values()].map((s) => ({
        name: s.name,
        address: s.address,
        meta: s.meta,
        incarnation: s.incarnation,
        state: s.state,
      })),
      userState,
    };
  }

  /** Merges a peer's full state by the gossip rules; a peer's "dead" becomes our "suspect". */
  #mergeState(remote: PushPullMessage): void {
    for (const r of remote.members) {
      switch (r.state) {
        case "alive":
          this.#aliveNode({
            type: "alive",
            incarnation: r.incarnation,
            node: r.name,
            address: r.address,
            meta: r.meta,
          });
          break;
        case "left":
          this.#deadNode({ type: "dead", incarnation: r.incarnation, node: r.name, from: r.name });
          break;
        case "dead":
        case "suspect":
          this.#suspectNode({
            type: "suspect",
            incarnation: r.incarnation,
            node: r.name,
            from: this.#name,
          });
          break;
      }
    }
    if (this.#delegate.mergeRemoteState) {
      try {
        this.#delegate.mergeRemoteState(remote.userState, remote.join);
      } catch (err) {
        this.#log.error("delegate mergeRemoteState failed", { error: errorText(err) });
      }
    }
  }

  async #pushPull(address: string, join: boolean): Promise<void> {
    const timeout = this.#config.streamTimeout;
    let stream: Stream;
    try {
      stream = await this.#transport.openStream(address, timeout);
    } catch (err) {
      this.#stats.pushPullsFailed++;
      throw err;
    }
    try {
      await stream.send(encodePushPull(this.#localState(join)));
      const reply = await stream.receive(timeout);
      if (reply === null) throw new JwError("closed", `${address} closed the stream`);
      let remote: PushPullMessage;
      try {
        remote = decodePushPull(reply);
      } catch (err) {
        this.#stats.invalidMessages++;
        throw err;
      }
      if (this.#closed) throw new JwError("closed", "memberlist is shut down");
      this.#mergeState(remote);
      this.#stats.pushPulls++;
    } catch (err) {
      this.#stats.pushPullsFailed++;
      throw err;
    } finally {
      stream.close();
    }
  }

  /**
   * Answers a push-pull. We merge the peer's state before replying, so that when the peer
   * believed us dead our reply already carries the refuting incarnation.
   */
  async #onStream(stream: Stream): Promise<void> {
    try {
      if (this.#closed) return;
      const data = await stream.receive(this.#config.streamTimeout);
      if (data === null || this.#closed) return;
      let remote: PushPullMessage;
      try {
        remote = decodePushPull(data);
      } catch (err) {
        this.#stats.invalidMessages++;
        this.#log.debug("dropped a malformed push-pull", {
          from: stream.remote,
          error: errorText(err),
        });
        return;
      }
      this.#mergeState(remote);
      await stream.send(encodePushPull(this.#localState(remote.join)));
      this.#stats.pushPulls++;
    } catch (err) {
      if (isJwError(err, "invalid_message")) this.#stats.invalidMessages++;
      this.#log.debug("push-pull from a peer failed", {
        from: stream.remote,
        error: errorText(err),
      });
    } finally {
      stream.close();
    }
  }

  #pushPullTick(): void {
    this.#after(
      pushPullScale(this.#config.pushPullInterval, this.numMembers()),
      () => this.#pushPullTick(),
    );
    const [peer] = this.#randomNodes(1, (s) => s.name !== this.#name && s.state === "alive");
    if (!peer) return;
    this.#pushPull(peer.address, false).catch((err) => {
      this.#log.debug("periodic push-pull failed", { node: peer.name, error: errorText(err) });
    });
  }

  #reconnectTick(): void {
    this.#after(this.#config.reconnectInterval, () => this.#reconnectTick());
    const now = this.#clock.now();
    for (const [name, f] of this.#failed) {
      const s = this.#nodes.get(name);
      const expired = now - f.since > this.#config.reconnectTimeout;
      if (expired || (s && s.state !== "dead")) this.#failed.delete(name);
    }
    if (this.#failed.size === 0) return;
    const names = [...this.#failed.keys()];
    const name = names[Math.floor(this.#random.float() * names.length)];
    const { address } = this.#failed.get(name)!;
    this.#stats.reconnects++;
    this.#pushPull(address, false).then(
      () => this.#log.info("reconnected with a failed member", { node: name }),
      (err) => this.#log.debug("reconnect failed", { node: name, error: errorText(err) }),
    );
  }
}

function toMember(s: NodeState): Member {
  return {
    name: s.name,
    address: s.address,
    meta: s.meta.slice(),
    state: s.state,
    incarnation: s.incarnation,
  };
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Fisher-Yates in place; returns `items`. */
function shuffle<T>(items: T[], random: Random): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random.float() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
