/**
 * One agent WebSocket's state machine, independent of the socket implementation:
 * awaiting `hello` → awaiting `response` → ready → closed.
 *
 * - Every incoming frame is decoded against the agent→server schemas with the configured
 *   size limit.
 * - During the handshake, any failure sends an `error` frame, closes with
 *   {@link CLOSE_HANDSHAKE_FAILED} and a reason naming the code, and is audited as
 *   `handshake.failed`. The handshake must finish within the configured timeout.
 * - Once ready, a bad frame gets an `error` frame and a `frame.rejected` audit record, and
 *   the connection stays open. `alive` marks the agent seen; `setTag` changes its tags;
 *   `output`, `log` and `setTag` are relayed to the reply bus with `agent` added.
 *
 * @module
 */
import type { Clock, TimerId } from "../../shared/clock.ts";
import type { AuditLog } from "../../shared/db/mod.ts";
import { type ErrorInfo, JwError, toJwError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/log.ts";
import { silentLogger } from "../../shared/log.ts";
import { type Random, randomId } from "../../shared/random.ts";
import {
  type AgentFrame,
  agentToServer,
  type Alive,
  decodeFrame,
  encodeFrame,
  type ErrorFrame,
  type Hello,
  type ServerFrame,
} from "../../shared/protocol/mod.ts";
import { RELAYED_JSON, type RelayedWithJson, type ReplyBus, withAgent } from "../delegate/bus.ts";
import type { Handshake, IssuedChallenge } from "./handshake.ts";
import type { LiveAgent, Registry } from "./registry.ts";
import type { AgentStore } from "./agent_store.ts";
import type { AvoidedServer, Decision, PlacementHints } from "../routing/placement.ts";

/** Close code for a failed or timed-out handshake. */
export const CLOSE_HANDSHAKE_FAILED = 4001;
/** Close code when the server shuts down ("going away"). */
export const CLOSE_GOING_AWAY = 1001;
/** Longest close reason sent, in UTF-8 bytes (WebSocket allows 123). */
export const MAX_CLOSE_REASON_BYTES = 120;
/** Frames an agent may have waiting while the handshake is in flight. */
const MAX_QUEUED_FRAMES = 4;
/** Close code for a connection that keeps sending frames we reject. */
export const CLOSE_TOO_MANY_BAD_FRAMES = 4002;
/**
 * Rejected frames tolerated per {@link BAD_FRAME_WINDOW_MS} before the connection is
 * closed, so one broken or hostile agent cannot flood the audit log.
 */
export const MAX_BAD_FRAMES = 20;
/** Window for {@link MAX_BAD_FRAMES}. */
export const BAD_FRAME_WINDOW_MS = 60_000;
/** Replies acknowledged at most this long after they arrive (batched `ack`). */
export const ACK_DELAY_MS = 20;
/** …or as soon as this many are waiting for an ack. */
export const ACK_EVERY = 256;
/** The highest processed `dseq` is written to the database at most this often per agent. */
export const DELIVERY_PERSIST_MS = 5_000;

/** The transport under a connection: a text-frame socket. */
export interface AgentSocket {
  /** Sends one text frame. May throw when the socket is closed. */
  send(text: string): void;
  /** Starts closing the socket. May throw when it is already closed. */
  close(code: number, reason: string): void;
}

/** Where a connection is in its life. */
export type ConnectionState = "hello" | "response" | "ready" | "closed";

/** Limits a connection enforces, from `ServerConfig.agents`. */
export interface ConnectionLimits {
  /** Largest accepted frame, bytes. */
  maxFrameBytes: number;
  /** Time allowed from connect to `welcome`, ms. */
  handshakeTimeoutMs: number;
  /** Heartbeat interval asked of the agent, ms. */
  heartbeatMs: number;
}

/** Shared collaborators of every connection. */
export interface ConnectionDeps {
  serverId: string;
  limits: ConnectionLimits;
  handshake: Handshake;
  registry: Registry;
  bus: ReplyBus;
  audit: AuditLog;
  clock: Clock;
  random: Random;
  logger?: Logger;
  /**
   * Called when a ready agent sends an `error` frame about one of our frames (`ref`), e.g.
   * a command it could not decode, so a run waiting on it can end at once.
   */
  onAgentError?: (agentId: string, ref: string, error: ErrorInfo) => void;
  /**
   * Where each agent's delivery state is kept, for acknowledging and de-duplicating
   * replies across reconnects and restarts. Without it, de-duplication only spans one
   * connection.
   */
  delivery?: Pick<AgentStore, "delivery" | "saveDelivery">;
  /**
   * Where agents belong (server/routing/). With it, an authenticated agent that belongs to
   * another server gets a `redirect` instead of a `welcome`, and a welcomed one gets the
   * server list right after its welcome. Without it every agent is welcomed here.
   */
  /** Called once an agent's `welcome` (and server list) has been sent. */
  onWelcomed?: (agentId: string) => void;
  /** Called for every `alive` from a ready agent (outputs take heartbeats too). */
  onAlive?: (agentId: string, frame: Alive, tags: Readonly<Record<string, string>>) => void;
  /**
   * Called right before replies are acknowledged to the agent: whatever holds them in memory
   * (the outputs' buffer) must make them durable now, since the agent forgets them on the ack.
   */
  beforeAck?: () => void;
  placement?: {
    decide(agentId: string, hints: PlacementHints): Decision;
    /** The current `servers` frame, encoded. */
    serversFrame(): string;
  };
}

/**
 * One agent connection. The socket adapter calls {@link AgentConnection.receive} for every
 * message and {@link AgentConnection.closed} once when the socket closes. Never throws:
 * any failure is contained to this connection.
 */
export interface AgentConnection {
  /** Peer address. */
  readonly address: string;
  readonly state: ConnectionState;
  /** The authenticated agent id once ready. */
  readonly agentId: string | undefined;
  /**
   * Handles one incoming message (text, or binary decoded as UTF-8). Messages are handled
   * in arrival order; the promise settles when this one has been handled.
   */
  receive(data: string | ArrayBuffer | Uint8Array): Promise<void>;
  /** The socket closed (by either side). Idempotent. */
  closed(code?: number, reason?: string): void;
  /** Closes the socket from the server side. Idempotent. */
  close(code: number, reason: string): void;
}

/** `reason` truncated to {@link MAX_CLOSE_REASON_BYTES} UTF-8 bytes on a character boundary. */
export function closeReason(reason: string): string {
  const encoder = new TextEncoder();
  if (encoder.encode(reason).length <= MAX_CLOSE_REASON_BYTES) return reason;
  let out = "";
  let bytes = 0;
  for (const ch of reason) {
    const n = encoder.encode(ch).length;
    if (bytes + n > MAX_CLOSE_REASON_BYTES) break;
    out += ch;
    bytes += n;
  }
  return out;
}

class Connection implements AgentConnection {
  readonly address: string;
  readonly #socket: AgentSocket;
  readonly #deps: ConnectionDeps;
  readonly #logger: Logger;
  #state: ConnectionState = "hello";
  #tail: Promise<void> = Promise.resolve();
  /** Messages waiting behind an async (handshake) step. */
  #queued = 0;
  #done = false;
  #timer: TimerId | undefined;
  #challenge: IssuedChallenge | undefined;
  #version = "";
  #helloTags: Record<string, string> = {};
  /** The id the peer claimed in `hello`, for audit records of a failed handshake. */
  #claimedId?: string;
  /** The outbox stream named in `hello`. */
  #stream: string | null = null;
  /** Placement hints from `hello`. */
  #hints: PlacementHints = {};
  /** Highest `dseq` processed, and what of it is persisted / acknowledged. */
  #dseq = 0;
  #persistedDseq = 0;
  #persistedAt = 0;
  #unacked = 0;
  #ackTimer?: TimerId;
  /** Rejected frames in the current window, and when that window started. */
  #badFrames = 0;
  #badWindowStart = 0;
  #agent: LiveAgent | undefined;

  readonly #onClosed?: (connection: AgentConnection) => void;

  constructor(
    socket: AgentSocket,
    address: string,
    deps: ConnectionDeps,
    onClosed?: (connection: AgentConnection) => void,
  ) {
    this.address = address;
    this.#onClosed = onClosed;
    this.#socket = socket;
    this.#deps = deps;
    this.#logger = deps.logger ?? silentLogger;
    this.#timer = deps.clock.setTimeout(() => {
      this.#timer = undefined;
      if (this.#state === "hello" || this.#state === "response") {
        this.#failHandshake(
          new JwError("timeout", "handshake did not finish in time"),
          undefined,
          "timeout",
        );
      }
    }, deps.limits.handshakeTimeoutMs);
  }

  get state(): ConnectionState {
    return this.#state;
  }

  get agentId(): string | undefined {
    return this.#agent?.id;
  }

  receive(data: string | ArrayBuffer | Uint8Array): Promise<void> {
    // Fast path: once ready, frames are handled synchronously when nothing is queued.
    if (this.#state === "ready" && this.#queued === 0) {
      this.#onReadySafely(data);
      return Promise.resolve();
    }
    if (this.#state === "closed") return Promise.resolve();
    if (this.#queued >= MAX_QUEUED_FRAMES && this.#state !== "ready") {
      this.#failHandshake(
        new JwError("unexpected_message", "too many frames sent during the handshake"),
        undefined,
      );
      return Promise.resolve();
    }
    this.#queued++;
    const next = this.#tail.then(() => this.#handle(data)).finally(() => this.#queued--);
    this.#tail = next;
    return next;
  }

  closed(code?: number, reason?: string): void {
    if (this.#done) return;
    this.#done = true;
    this.#state = "closed";
    this.#clearTimer();
    if (this.#challenge) {
      this.#deps.handshake.release(this.#challenge);
      this.#challenge = undefined;
    }
    if (this.#ackTimer !== undefined) {
      this.#deps.clock.clearTimeout(this.#ackTimer);
      this.#ackTimer = undefined;
    }
    this.#saveDelivery();
    const agent = this.#agent;
    if (agent) {
      this.#deps.registry.detach(agent);
      this.#logger.info("agent disconnected", { agent: agent.id, code, reason });
    }
    this.#onClosed?.(this);
  }

  close(code: number, reason: string): void {
    if (this.#done) return;
    try {
      this.#socket.close(code, closeReason(reason));
    } catch (err) {
      this.#logger.debug("socket close failed", { address: this.address, error: String(err) });
    }
    this.closed(code, reason);
  }

  async #handle(data: string | ArrayBuffer | Uint8Array): Promise<void> {
    try {
      if (this.#state === "hello" || this.#state === "response") await this.#onHandshake(data);
      else if (this.#state === "ready") this.#onReady(data);
    } catch (err) {
      this.#logger.error("agent frame handling failed", {
        address: this.address,
        error: String(err),
      });
    }
  }

  #onReadySafely(data: string | ArrayBuffer | Uint8Array): void {
    try {
      this.#onReady(data);
    } catch (err) {
      this.#logger.error("agent frame handling failed", {
        address: this.address,
        error: String(err),
      });
    }
  }

  async #onHandshake(data: string | ArrayBuffer | Uint8Array): Promise<void> {
    let frame: AgentFrame | undefined;
    try {
      frame = decodeFrame(data, agentToServer, this.#deps.limits.maxFrameBytes);
      if (this.#state === "hello" && frame.type === "hello") {
        this.#version = frame.version;
        this.#helloTags = frame.tags;
        this.#claimedId = frame.agentId;
        this.#stream = frame.stream ?? null;
        this.#hints = {
          hops: frame.hops ?? 0,
          avoid: avoidedServers(frame, this.#deps.clock.now()),
        };
        const challenge = await this.#deps.handshake.issue(frame);
        if (this.#state !== "hello") {
          this.#deps.handshake.release(challenge);
          return;
        }
        this.#challenge = challenge;
        this.#state = "response";
        this.#send({
          v: 1,
          id: randomId(this.#deps.random),
          type: "challenge",
          header: challenge.header,
          payload: challenge.claims,
        });
        return;
      }
      if (this.#state === "response" && frame.type === "response" && this.#challenge) {
        const challenge = this.#challenge;
        const verified = await this.#deps.handshake.verify(challenge, frame.jws);
        this.#challenge = undefined;
        if (this.#state !== "response") return;
        const decision = this.#deps.placement?.decide(verified.agentId, this.#hints);
        if (decision?.kind === "redirect") {
          this.#redirect(verified.agentId, decision);
          return;
        }
        this.#becomeReady(verified.agentId, verified.kid, verified.pinned);
        return;
      }
      throw new JwError(
        "unexpected_message",
        `"${frame.type}" frame not allowed while awaiting ${this.#state}`,
      );
    } catch (err) {
      if (this.#state === "closed") return;
      this.#failHandshake(toJwError(err), frame?.id ?? refOf(err));
    }
  }

  /** Sends an authenticated agent to the server that owns it, and closes. */
  #redirect(agentId: string, decision: Decision & { kind: "redirect" }): void {
    this.#clearTimer();
    this.#send({
      v: 1,
      id: randomId(this.#deps.random),
      type: "redirect",
      url: decision.server.url,
      reason: decision.reason,
    });
    this.#deps.audit.append({
      actor: `agent:${agentId}`,
      action: "handshake.redirected",
      target: agentId,
      outcome: "ok",
      reason: `to ${decision.server.id} at ${decision.server.url}: ${decision.reason}`,
    });
    this.#logger.debug("agent redirected", { agent: agentId, to: decision.server.id });
    this.close(1000, "redirected");
  }

  #becomeReady(agentId: string, kid: string, pinned: boolean): void {
    const { registry, audit, limits, serverId, random } = this.#deps;
    this.#clearTimer();
    this.#state = "ready";
    this.#agent = registry.attach({
      agentId,
      version: this.#version,
      address: this.address,
      tags: this.#helloTags,
      avoid: this.#hints.avoid,
      send: (frame) => this.#socket.send(encodeFrame(frame)),
      sendEncoded: (text) => this.#socket.send(text),
      close: (code, reason) => this.close(code, reason),
    });
    this.#loadDelivery(agentId);
    audit.append({
      actor: `agent:${agentId}`,
      action: "handshake.ok",
      target: agentId,
      outcome: "ok",
      reason: `${pinned ? "pinned new key" : "key"} ${kid} from ${this.address}`,
    });
    this.#logger.info("agent connected", { agent: agentId, address: this.address });
    this.#send({
      v: 1,
      id: randomId(random),
      type: "welcome",
      serverId,
      agentId,
      heartbeatMs: limits.heartbeatMs,
      maxFrameBytes: limits.maxFrameBytes,
    });
    const servers = this.#deps.placement?.serversFrame();
    if (servers !== undefined) {
      try {
        this.#socket.send(servers);
      } catch (err) {
        this.#logger.debug("socket send failed", { address: this.address, error: String(err) });
      }
    }
    this.#deps.onWelcomed?.(agentId);
  }

  #onReady(data: string | ArrayBuffer | Uint8Array): void {
    const agent = this.#agent;
    if (!agent) return;
    const { registry, bus } = this.#deps;
    let frame: AgentFrame;
    try {
      frame = decodeFrame(data, agentToServer, this.#deps.limits.maxFrameBytes);
    } catch (err) {
      this.#rejectFrame(toJwError(err), refOf(err));
      return;
    }
    registry.touch(agent);
    switch (frame.type) {
      case "output":
      case "log": {
        if (this.#seen(frame.dseq)) return;
        const relayed: RelayedWithJson = { ...frame, agent: agent.id };
        if (typeof data === "string") relayed[RELAYED_JSON] = withAgent(data, agent.id);
        bus.publish(relayed, agent.tags);
        return;
      }
      case "setTag": {
        if (this.#seen(frame.dseq)) return;
        const tags = registry.setTags(agent, frame.tags);
        bus.publish({ ...frame, agent: agent.id }, tags);
        return;
      }
      case "alive":
        this.#deps.onAlive?.(agent.id, frame, agent.tags);
        // Answering every heartbeat lets the agent notice a server that went silent. Agents
        // that name no outbox stream predate acks and would reject them.
        if (this.#stream !== null) this.#sendAck();
        return;
      case "error":
        this.#logger.warn("agent reported an error", {
          agent: agent.id,
          ref: frame.ref,
          code: frame.error.code,
          message: frame.error.message,
        });
        if (frame.ref !== undefined) this.#deps.onAgentError?.(agent.id, frame.ref, frame.error);
        return;
      default:
        this.#rejectFrame(
          new JwError("unexpected_message", `"${frame.type}" frame not allowed after welcome`),
          frame.id,
        );
    }
  }

  /**
   * Notes a reply's delivery sequence and schedules its ack. True when it was processed
   * before (a resend after a reconnect): the caller drops it.
   */
  #seen(dseq: number | undefined): boolean {
    if (dseq === undefined) return false;
    const fresh = dseq > this.#dseq;
    if (fresh) this.#dseq = dseq;
    if (++this.#unacked >= ACK_EVERY) this.#sendAck();
    else if (this.#ackTimer === undefined) {
      this.#ackTimer = this.#deps.clock.setTimeout(() => {
        this.#ackTimer = undefined;
        this.#sendAck();
      }, ACK_DELAY_MS);
    }
    if (!fresh) this.#logger.debug("dropped a resent reply", { agent: this.#agent?.id, dseq });
    return !fresh;
  }

  #sendAck(): void {
    if (this.#ackTimer !== undefined) {
      this.#deps.clock.clearTimeout(this.#ackTimer);
      this.#ackTimer = undefined;
    }
    this.#unacked = 0;
    try {
      this.#deps.beforeAck?.();
    } catch (err) {
      this.#logger.error("cannot make replies durable before acknowledging them", {
        error: String(err),
      });
    }
    this.#send({ v: 1, id: randomId(this.#deps.random), type: "ack", upTo: this.#dseq });
    if (this.#deps.clock.now() - this.#persistedAt >= DELIVERY_PERSIST_MS) this.#saveDelivery();
  }

  #loadDelivery(agentId: string): void {
    const store = this.#deps.delivery;
    if (!store) return;
    const known = store.delivery(agentId);
    if (known.stream === this.#stream) {
      this.#dseq = this.#persistedDseq = known.dseq;
    } else {
      // A new outbox (or none): its numbering starts over.
      store.saveDelivery(agentId, { stream: this.#stream, dseq: 0 });
    }
    this.#persistedAt = this.#deps.clock.now();
  }

  #saveDelivery(): void {
    const agent = this.#agent;
    this.#persistedAt = this.#deps.clock.now();
    if (!agent || !this.#deps.delivery || this.#dseq === this.#persistedDseq) return;
    try {
      this.#deps.delivery.saveDelivery(agent.id, { stream: this.#stream, dseq: this.#dseq });
      this.#persistedDseq = this.#dseq;
    } catch (err) {
      this.#logger.error("cannot save delivery state", { agent: agent.id, error: String(err) });
    }
  }

  #rejectFrame(err: JwError, ref: string | undefined): void {
    const agentId = this.#agent?.id;
    const now = this.#deps.clock.now();
    if (now - this.#badWindowStart >= BAD_FRAME_WINDOW_MS) {
      this.#badWindowStart = now;
      this.#badFrames = 0;
    }
    if (++this.#badFrames > MAX_BAD_FRAMES) {
      this.#deps.audit.append({
        actor: agentId ? `agent:${agentId}` : this.address,
        action: "connection.closed",
        target: agentId,
        outcome: "denied",
        reason: `more than ${MAX_BAD_FRAMES} rejected frames in ${BAD_FRAME_WINDOW_MS / 1000}s`,
      });
      this.#logger.warn("closing a connection that keeps sending bad frames", { agent: agentId });
      // Acknowledge what was processed, so those replies are not resent into the same wall.
      if (this.#unacked > 0) this.#sendAck();
      this.close(CLOSE_TOO_MANY_BAD_FRAMES, "too many bad frames");
      return;
    }
    this.#sendError(err, ref);
    this.#deps.audit.append({
      actor: agentId ? `agent:${agentId}` : this.address,
      action: "frame.rejected",
      target: agentId,
      outcome: "denied",
      reason: `${err.code}: ${err.message}`,
    });
  }

  #failHandshake(err: JwError, ref: string | undefined, reason?: string): void {
    if (this.#done) return;
    const agentId = this.#challenge?.agentId ?? this.#claimedId;
    this.#sendError(err, ref);
    this.#deps.audit.append({
      actor: agentId ? `agent:${agentId}` : this.address,
      action: "handshake.failed",
      target: agentId,
      outcome: "denied",
      reason: `${err.code}: ${err.message}`,
    });
    this.#logger.warn("agent handshake failed", {
      address: this.address,
      agent: agentId,
      code: err.code,
      message: err.message,
    });
    this.close(CLOSE_HANDSHAKE_FAILED, reason ?? `${err.code}: ${err.message}`);
  }

  #sendError(err: JwError, ref: string | undefined): void {
    const info: ErrorInfo = { code: err.code, message: err.message };
    const frame: ErrorFrame = { v: 1, id: randomId(this.#deps.random), type: "error", error: info };
    if (ref !== undefined) frame.ref = ref;
    this.#send(frame);
  }

  #send(frame: ServerFrame): void {
    try {
      this.#socket.send(encodeFrame(frame));
    } catch (err) {
      this.#logger.debug("socket send failed", { address: this.address, error: String(err) });
    }
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) {
      this.#deps.clock.clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }
}

function refOf(err: unknown): string | undefined {
  const ref = err instanceof JwError ? err.detail?.ref : undefined;
  return typeof ref === "string" ? ref : undefined;
}

/**
 * Creates the state machine for a just-opened socket and starts its handshake timer.
 * The caller must call {@link AgentConnection.closed} when the socket closes; `onClosed`
 * runs once, then.
 */
export function createConnection(
  socket: AgentSocket,
  address: string,
  deps: ConnectionDeps,
  onClosed?: (connection: AgentConnection) => void,
): AgentConnection {
  return new Connection(socket, address, deps, onClosed);
}

/**
 * The servers a hello names as unreachable, with when the agent last failed to reach each
 * (`avoidAgo`, on this server's clock; without it, now).
 */
function avoidedServers(hello: Hello, now: number): AvoidedServer[] {
  return (hello.avoid ?? []).map((id, i) => ({ id, at: now - (hello.avoidAgo?.[i] ?? 0) }));
}
