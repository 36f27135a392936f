/**
 * Live agent connections by id, merged with the persisted `agents` table for listings.
 * Owns tags and last-seen times; resolves operator targets to connected agent ids.
 *
 * @module
 */
import type { Clock } from "../../shared/clock.ts";
import type { Logger } from "../../shared/log.ts";
import { silentLogger } from "../../shared/log.ts";
import type { AgentInfo, ServerFrame, Target } from "../../shared/protocol/mod.ts";
import type { AgentStore, TagMap } from "./agent_store.ts";
import type { AvoidedServer } from "../routing/placement.ts";

/** WebSocket close code for a connection replaced by a newer one for the same agent. */
export const CLOSE_REPLACED = 4000;

/** How often, at most, an agent's last-seen time is written to the database (ms). */
export const LAST_SEEN_PERSIST_MS = 10_000;

/** What a connection hands the registry once its agent is authenticated. */
export interface AgentSession {
  agentId: string;
  /** Agent software version from `hello`. */
  version: string;
  /** Peer address, `host:port`. */
  address: string;
  /**
   * Tags from `hello`. The agent is the source of truth: they replace the stored tags
   * (which only serve listings while the agent is away).
   */
  tags: TagMap;
  /** Servers the agent said in `hello` it could not reach lately (placement honours them). */
  avoid?: readonly AvoidedServer[];
  /** Sends one frame; throws when the socket is gone. */
  send(frame: ServerFrame): void;
  /** Sends one frame already encoded (one encoding shared by many agents); throws when gone. */
  sendEncoded(text: string): void;
  /** Closes the socket. */
  close(code: number, reason: string): void;
}

/** A connected, authenticated agent. */
export interface LiveAgent {
  readonly id: string;
  /** Current tags (a fresh object after every change; never mutate it). */
  readonly tags: Readonly<TagMap>;
  /** Epoch ms when the handshake finished. */
  readonly connectedAt: number;
  /** Epoch ms of the last frame from the agent. */
  readonly lastSeen: number;
  readonly address: string;
  readonly version: string;
  /** Servers the agent said in `hello` it could not reach lately. */
  readonly avoid: readonly AvoidedServer[];
  /**
   * Sends one frame to the agent.
   * @throws when the socket is already closed.
   */
  send(frame: ServerFrame): void;
  /**
   * Sends a frame already encoded with `encodeFrame`, so a command fanned out to many agents
   * is serialised once.
   * @throws when the socket is already closed.
   */
  sendEncoded(text: string): void;
  /** Closes the agent's socket. */
  close(code: number, reason: string): void;
}

/** Called when an agent id loses its live connection (not when it is replaced). */
export type DisconnectListener = (agentId: string) => void;

/** What happened to an agent: it connected, disconnected, or its tags changed. */
export type AgentChange = "connected" | "disconnected" | "tags";

/** Called after an agent's connection or tags change. */
export type ChangeListener = (agentId: string, change: AgentChange) => void;

/**
 * The set of live agents. Synchronous; at most one live connection per agent id.
 */
export interface Registry {
  /**
   * Registers an authenticated connection. A live connection for the same id is closed
   * with {@link CLOSE_REPLACED} "replaced" and loses its place (no disconnect event).
   */
  attach(session: AgentSession): LiveAgent;
  /**
   * Removes `agent` if it is still the live connection for its id, persists its last-seen
   * time and emits a disconnect. Idempotent; a replaced connection is ignored.
   */
  detach(agent: LiveAgent): void;
  /**
   * Marks `agent` as heard from now. Last-seen times are written for every agent heard
   * from at most every {@link LAST_SEEN_PERSIST_MS}, all in one transaction.
   */
  touch(agent: LiveAgent): void;
  /**
   * Merges `changes` into `agent`'s tags (`null` deletes a tag) and persists them.
   * @returns the new tags.
   */
  setTags(agent: LiveAgent, changes: Record<string, string | null>): Readonly<TagMap>;
  /** The live connection for `id`. */
  get(id: string): LiveAgent | undefined;
  /** Every live connection, in no particular order. */
  live(): IterableIterator<LiveAgent>;
  /** Ids of connected agents that `target` selects, sorted. */
  resolve(target: Target): string[];
  /** Every agent ever seen, live state over persisted state, sorted by id. */
  list(): AgentInfo[];
  /** Number of live agents. */
  readonly connected: number;
  /** Subscribes to disconnects; returns the unsubscribe function. */
  onDisconnect(listener: DisconnectListener): () => void;
  /**
   * Subscribes to connects, disconnects and tag changes (a replaced connection reports one
   * `connected`); returns the unsubscribe function.
   */
  onChange(listener: ChangeListener): () => void;
  /** Closes and detaches every live agent. */
  closeAll(code: number, reason: string): void;
}

/** Options for {@link createRegistry}. */
export interface RegistryOptions {
  /** This server's id, reported as `server` for connected agents. */
  serverId: string;
  store: AgentStore;
  clock: Clock;
  logger?: Logger;
}

class Live implements LiveAgent {
  readonly id: string;
  tags: Readonly<TagMap>;
  readonly connectedAt: number;
  lastSeen: number;
  readonly address: string;
  readonly version: string;
  readonly avoid: readonly AvoidedServer[];
  readonly #session: AgentSession;

  constructor(session: AgentSession, tags: TagMap, now: number) {
    this.id = session.agentId;
    this.tags = tags;
    this.connectedAt = now;
    this.lastSeen = now;
    this.address = session.address;
    this.version = session.version;
    this.avoid = session.avoid ?? [];
    this.#session = session;
  }

  sendEncoded(text: string): void {
    this.#session.sendEncoded(text);
  }

  send(frame: ServerFrame): void {
    this.#session.send(frame);
  }

  close(code: number, reason: string): void {
    this.#session.close(code, reason);
  }
}

class RegistryImpl implements Registry {
  readonly #options: RegistryOptions;
  readonly #logger: Logger;
  readonly #live = new Map<string, Live>();
  readonly #listeners = new Set<DisconnectListener>();
  readonly #changeListeners = new Set<ChangeListener>();
  /** Agents heard from since the last write of last-seen times. */
  readonly #dirty = new Set<Live>();
  #lastFlush: number;

  constructor(options: RegistryOptions) {
    this.#options = options;
    this.#logger = options.logger ?? silentLogger;
    this.#lastFlush = options.clock.now();
  }

  get connected(): number {
    return this.#live.size;
  }

  attach(session: AgentSession): LiveAgent {
    const { store, clock, serverId } = this.#options;
    const now = clock.now();
    const tags = { ...session.tags };
    const agent = new Live(session, tags, now);
    const old = this.#live.get(session.agentId);
    this.#live.set(session.agentId, agent);
    if (old) {
      this.#logger.info("agent connection replaced", { agent: old.id, old: old.address });
      this.#closeQuietly(old, CLOSE_REPLACED, "replaced");
    }
    store.saveConnect(session.agentId, {
      version: session.version,
      address: session.address,
      server: serverId,
      tags,
      at: now,
    });
    this.#changed(session.agentId, "connected");
    return agent;
  }

  #changed(agentId: string, change: AgentChange): void {
    for (const listener of [...this.#changeListeners]) {
      try {
        listener(agentId, change);
      } catch (err) {
        this.#logger.error("agent change listener failed", { error: String(err) });
      }
    }
  }

  detach(agent: LiveAgent): void {
    if (this.#live.get(agent.id) !== agent) return;
    this.#live.delete(agent.id);
    this.#dirty.delete(agent as Live);
    this.#options.store.saveLastSeen(agent.id, agent.lastSeen);
    for (const listener of [...this.#listeners]) {
      try {
        listener(agent.id);
      } catch (err) {
        this.#logger.error("disconnect listener failed", { error: String(err) });
      }
    }
    this.#changed(agent.id, "disconnected");
  }

  touch(agent: LiveAgent): void {
    const live = agent as Live;
    const now = this.#options.clock.now();
    live.lastSeen = now;
    this.#dirty.add(live);
    if (now - this.#lastFlush >= LAST_SEEN_PERSIST_MS) this.#flushLastSeen(now);
  }

  /** Writes the last-seen time of every agent heard from since the last flush. */
  #flushLastSeen(now: number): void {
    this.#lastFlush = now;
    const batch: [string, number][] = [];
    for (const live of this.#dirty) {
      if (this.#live.get(live.id) === live) batch.push([live.id, live.lastSeen]);
    }
    this.#dirty.clear();
    try {
      this.#options.store.saveLastSeenMany(batch);
    } catch (err) {
      this.#logger.error("cannot save last-seen times", { error: String(err) });
    }
  }

  setTags(agent: LiveAgent, changes: Record<string, string | null>): Readonly<TagMap> {
    const live = agent as Live;
    const next: TagMap = { ...live.tags };
    for (const [name, value] of Object.entries(changes)) {
      if (value === null) delete next[name];
      else next[name] = value;
    }
    live.tags = next;
    if (this.#live.get(live.id) === live) {
      this.#options.store.saveTags(live.id, next);
      this.#changed(live.id, "tags");
    }
    return next;
  }

  get(id: string): LiveAgent | undefined {
    return this.#live.get(id);
  }

  live(): IterableIterator<LiveAgent> {
    return this.#live.values();
  }

  resolve(target: Target): string[] {
    switch (target.kind) {
      case "agent":
        return this.#live.has(target.id) ? [target.id] : [];
      case "all":
        return [...this.#live.keys()].sort();
      case "tag": {
        const ids: string[] = [];
        for (const agent of this.#live.values()) {
          if (Object.hasOwn(agent.tags, target.name) && agent.tags[target.name] === target.value) {
            ids.push(agent.id);
          }
        }
        return ids.sort();
      }
    }
  }

  list(): AgentInfo[] {
    const { store, serverId } = this.#options;
    const out: AgentInfo[] = [];
    for (const row of store.all()) {
      const live = this.#live.get(row.id);
      out.push(
        live
          ? {
            id: row.id,
            connected: true,
            tags: { ...live.tags },
            server: serverId,
            lastSeen: live.lastSeen,
            firstSeen: row.firstSeen,
            kid: row.kid,
            version: live.version,
            address: live.address,
          }
          : {
            id: row.id,
            connected: false,
            tags: row.tags,
            server: row.server,
            lastSeen: row.lastSeen,
            firstSeen: row.firstSeen,
            kid: row.kid,
            version: row.version,
            address: row.address,
          },
      );
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  onDisconnect(listener: DisconnectListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  onChange(listener: ChangeListener): () => void {
    this.#changeListeners.add(listener);
    return () => this.#changeListeners.delete(listener);
  }

  closeAll(code: number, reason: string): void {
    for (const agent of [...this.#live.values()]) {
      this.#closeQuietly(agent, code, reason);
      this.detach(agent);
    }
  }

  #closeQuietly(agent: Live, code: number, reason: string): void {
    try {
      agent.close(code, reason);
    } catch (err) {
      this.#logger.debug("closing agent socket failed", { agent: agent.id, error: String(err) });
    }
  }
}

/** Creates an empty {@link Registry}. */
export function createRegistry(options: RegistryOptions): Registry {
  return new RegistryImpl(options);
}
