/**
 * The agent's connection to its server: one WebSocket at a time, the challenge handshake,
 * redirects (bounded hops), heartbeats, and reconnects with exponential backoff and full
 * jitter. Every incoming frame is schema-checked; a bad frame gets an `error` frame back
 * and the connection stays up. All timers go through the Clock.
 *
 * @module
 */
import type { Clock, TimerId } from "../shared/clock.ts";
import type { Ed25519KeyPair } from "../shared/crypto/mod.ts";
import { signChallenge } from "../shared/crypto/mod.ts";
import { JwError, toJwError } from "../shared/errors.ts";
import type { Logger } from "../shared/log.ts";
import { type Random, randomId } from "../shared/random.ts";
import {
  type AgentFrame,
  type Alive,
  type Challenge,
  type Command,
  decodeFrame,
  encodeFrame,
  type ErrorFrame,
  type Hello,
  JW_VERSION,
  PROTOCOL_VERSION,
  type ServerFrame,
  serverToAgent,
  type Welcome,
} from "../shared/protocol/mod.ts";
import { type BackoffBounds, backoffDelay } from "./backoff.ts";
import type { AuditSink } from "./jobs/mod.ts";
import type { Socket, Transport } from "./transport.ts";
import { agentUrl } from "./url.ts";

/** Close code the agent uses when it gives up on a handshake (bad challenge, timeout). */
export const CLOSE_HANDSHAKE_REFUSED = 4000;

/** Options for {@link startConnection}. */
export interface ConnectionOptions {
  /** This agent's id. */
  agentId: string;
  /** The configured server URL (http(s) or ws(s)); reconnects always start here. */
  server: string;
  /** The agent's key pair. */
  keyPair: Ed25519KeyPair;
  /** Tags to send in each `hello`; read at every connect. */
  tags(): Record<string, string>;
  /** Backoff caps in ms. */
  reconnect: BackoffBounds;
  /** Largest frame accepted from the server, in bytes. */
  maxFrame: number;
  transport: Transport;
  clock: Clock;
  random: Random;
  logger: Logger;
  audit: AuditSink;
  /** Jobs running now, reported in `alive`. */
  running(): number;
  /** When the agent started (epoch ms), for `alive.uptimeMs`. Default: now. */
  startedAt?: number;
  /**
   * Longest wait for the socket to open, and then again from open to welcome, before giving
   * up on a server. Default 30000 ms.
   */
  handshakeTimeoutMs?: number;
  /** Redirects followed in a row before backing off on the configured server. Default 5. */
  maxRedirects?: number;
  /** Called right after each welcome, once `connected` is true (flush queued replies here). */
  onWelcome?(welcome: Welcome): void;
  /** Called for each `command` after the welcome, in arrival order. Must not throw. */
  onCommand?(command: Command, serverId: string): void;
  /** Called when a welcomed connection ends. */
  onDisconnect?(): void;
  /** Called for each `ack` from the server (replies processed up to `upTo`). */
  onAck?(upTo: number): void;
  /** The outbox stream id sent in `hello` (see the `Hello` schema). */
  stream?(): string;
  /**
   * How many heartbeat intervals the server may stay silent before the agent gives up on
   * the connection and reconnects (the server answers every `alive`). Default 3.
   */
  silenceHeartbeats?: number;
}

/** A running connection loop. */
export interface Connection extends AsyncDisposable {
  /** True between a welcome and the end of that socket. */
  readonly connected: boolean;
  /** The id of the server that welcomed us, while connected. */
  readonly serverId: string | undefined;
  /** Resolves at the next welcome, or at once while connected; rejects (`closed`) on close. */
  welcomed(): Promise<void>;
  /** Sends a frame if connected; false (nothing sent) otherwise. */
  send(frame: AgentFrame): boolean;
  /** Stops reconnecting and closes the socket with 1000. Idempotent; resolves when stopped. */
  close(): Promise<void>;
}

interface Session {
  socket: Socket;
  url: string;
  phase: "hello" | "challenged" | "welcomed";
  /** Set once the session is being ended by us; later frames are ignored. */
  ending: boolean;
  redirect?: string;
  serverId?: string;
  handshakeTimer?: TimerId;
  heartbeatTimer?: TimerId;
  /** Fires when the server has been silent too long after the welcome. */
  silenceTimer?: TimerId;
  /** Heartbeat interval from the welcome, ms. */
  heartbeatMs?: number;
}

/**
 * Starts connecting at once and keeps reconnecting until closed. Returns immediately.
 * @throws JwError `config` when `server` is not an http(s)/ws(s) URL.
 */
export function startConnection(options: ConnectionOptions): Connection {
  return new AgentConnection(options);
}

class AgentConnection implements Connection {
  readonly #o: ConnectionOptions;
  readonly #stop = new AbortController();
  readonly #startedAt: number;
  readonly #base: string;
  readonly #loop: Promise<void>;
  #closed = false;
  #session: Session | undefined;
  #connected = false;
  #attempt = 0;
  #waiters: { resolve: () => void; reject: (err: Error) => void }[] = [];

  constructor(options: ConnectionOptions) {
    this.#o = options;
    this.#startedAt = options.startedAt ?? options.clock.now();
    this.#base = agentUrl(options.server);
    this.#loop = this.#run();
  }

  get connected(): boolean {
    return this.#connected;
  }

  get serverId(): string | undefined {
    return this.#connected ? this.#session?.serverId : undefined;
  }

  welcomed(): Promise<void> {
    if (this.#connected) return Promise.resolve();
    if (this.#closed) return Promise.reject(new JwError("closed", "connection is closed"));
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  send(frame: AgentFrame): boolean {
    const s = this.#session;
    if (!this.#connected || !s || s.ending) return false;
    return s.socket.send(encodeFrame(frame));
  }

  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#stop.abort(new JwError("closed", "connection is closed"));
      const s = this.#session;
      if (s) {
        s.ending = true;
        s.socket.close(1000, "agent stopping");
      }
      for (const w of this.#waiters.splice(0)) {
        w.reject(new JwError("closed", "connection is closed"));
      }
    }
    await this.#loop;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #run(): Promise<void> {
    const { logger, clock } = this.#o;
    const base = this.#base;
    const maxRedirects = this.#o.maxRedirects ?? 5;
    let url = base;
    let hops = 0;
    while (!this.#closed) {
      const redirect = await this.#connectOnce(url);
      if (this.#closed) break;
      if (redirect !== undefined) {
        if (hops < maxRedirects) {
          hops++;
          url = redirect;
          continue;
        }
        logger.warn("too many redirects in a row; backing off", { hops, last: redirect });
      }
      url = base;
      hops = 0;
      const delay = backoffDelay(this.#attempt++, this.#o.reconnect, this.#o.random);
      logger.debug("reconnecting", { inMs: Math.round(delay), attempt: this.#attempt });
      try {
        await clock.sleep(delay, this.#stop.signal);
      } catch {
        break;
      }
    }
  }

  /** One connection: returns the redirect target if the server redirected us. */
  async #connectOnce(url: string): Promise<string | undefined> {
    const { logger, transport, clock } = this.#o;
    const handshakeTimeoutMs = this.#o.handshakeTimeoutMs ?? 30_000;
    // The connect itself shares the handshake deadline, and stops when the agent closes.
    const attempt = new AbortController();
    const abort = () => attempt.abort(new JwError("closed", "connect abandoned"));
    this.#stop.signal.addEventListener("abort", abort, { once: true });
    const connectTimer = clock.setTimeout(abort, handshakeTimeoutMs);
    let socket: Socket;
    try {
      socket = await transport.connect(url, attempt.signal);
    } catch (err) {
      if (!this.#closed) logger.warn("cannot connect", { url, error: toJwError(err).message });
      return undefined;
    } finally {
      clock.clearTimeout(connectTimer);
      this.#stop.signal.removeEventListener("abort", abort);
    }
    const s: Session = { socket, url, phase: "hello", ending: false };
    if (this.#closed) {
      socket.close(1000, "agent stopping");
      await socket.closed;
      return undefined;
    }
    this.#session = s;
    logger.debug("connected; saying hello", { url });
    const hello: Hello = {
      v: PROTOCOL_VERSION,
      id: this.#newId("h"),
      type: "hello",
      agentId: this.#o.agentId,
      publicKey: this.#o.keyPair.publicJwk,
      version: JW_VERSION,
      tags: this.#o.tags(),
    };
    const stream = this.#o.stream?.();
    if (stream !== undefined) hello.stream = stream;
    socket.send(encodeFrame(hello));
    s.handshakeTimer = clock.setTimeout(() => {
      logger.warn("handshake timed out", { url });
      this.#end(s, CLOSE_HANDSHAKE_REFUSED, "handshake timeout");
    }, handshakeTimeoutMs);
    try {
      for await (const text of socket) {
        if (s.ending) continue;
        try {
          await this.#onText(s, text);
        } catch (err) {
          // A bug (a callback threw): report it, keep reading so the socket is not stranded.
          logger.error("failed to handle a frame", { error: toJwError(err).message });
        }
      }
    } finally {
      if (s.handshakeTimer !== undefined) clock.clearTimeout(s.handshakeTimer);
      if (s.heartbeatTimer !== undefined) clock.clearTimeout(s.heartbeatTimer);
      if (s.silenceTimer !== undefined) clock.clearTimeout(s.silenceTimer);
      this.#session = undefined;
      if (s.phase === "welcomed") {
        this.#connected = false;
        this.#o.onDisconnect?.();
      }
    }
    const info = await socket.closed;
    logger.info("disconnected", { url, code: info.code, reason: info.reason || undefined });
    return s.redirect;
  }

  async #onText(s: Session, text: string): Promise<void> {
    if (s.phase === "welcomed") this.#armSilence(s);
    let frame: ServerFrame;
    try {
      frame = decodeFrame(text, serverToAgent, this.#o.maxFrame);
    } catch (err) {
      const e = toJwError(err);
      const ref = typeof e.detail?.ref === "string" ? e.detail.ref : undefined;
      this.#reject(s, ref, e);
      return;
    }
    switch (frame.type) {
      case "challenge":
        if (s.phase !== "hello") return this.#unexpected(s, frame);
        return await this.#onChallenge(s, frame);
      case "welcome":
        if (s.phase !== "challenged") return this.#unexpected(s, frame);
        return this.#onWelcome(s, frame);
      case "redirect": {
        let target: string;
        try {
          target = agentUrl(frame.url);
        } catch (err) {
          return this.#reject(s, frame.id, toJwError(err));
        }
        this.#o.logger.info("redirected", { from: s.url, to: target, reason: frame.reason });
        s.redirect = target;
        return this.#end(s, 1000, "redirected");
      }
      case "command":
        if (s.phase !== "welcomed") return this.#unexpected(s, frame);
        this.#o.onCommand?.(frame, s.serverId!);
        return;
      case "ack":
        if (s.phase !== "welcomed") return this.#unexpected(s, frame);
        this.#o.onAck?.(frame.upTo);
        return;
      case "error":
        this.#o.logger.warn(
          s.phase === "welcomed" ? "server reported an error" : "server refused the handshake",
          { ref: frame.ref, code: frame.error.code, error: frame.error.message },
        );
        if (s.phase !== "welcomed") {
          this.#o.audit.append({
            actor: this.#actor(s),
            action: "handshake.failed",
            target: this.#o.agentId,
            outcome: "denied",
            reason: `server refused: ${frame.error.code}: ${frame.error.message}`,
          });
        }
        return;
    }
  }

  async #onChallenge(s: Session, frame: Challenge): Promise<void> {
    const { agentId, keyPair } = this.#o;
    const { header, payload } = frame;
    if (payload.sub !== agentId || payload.kid !== keyPair.kid || header.kid !== keyPair.kid) {
      this.#o.logger.warn("challenge is not for this agent; disconnecting", {
        sub: payload.sub,
        kid: payload.kid,
      });
      this.#o.audit.append({
        actor: this.#actor(s),
        action: "handshake.failed",
        target: agentId,
        outcome: "denied",
        reason: "challenge names another agent or key",
      });
      return this.#end(s, CLOSE_HANDSHAKE_REFUSED, "challenge not for this agent");
    }
    s.phase = "challenged";
    let jws: string;
    try {
      jws = await signChallenge(keyPair.privateKey, header, payload);
    } catch (err) {
      this.#o.logger.error("cannot sign the challenge", { error: toJwError(err).message });
      return this.#end(s, CLOSE_HANDSHAKE_REFUSED, "cannot sign");
    }
    if (s.ending) return;
    s.socket.send(
      encodeFrame({ v: PROTOCOL_VERSION, id: this.#newId("r"), type: "response", jws }),
    );
  }

  #onWelcome(s: Session, frame: Welcome): void {
    if (frame.agentId !== this.#o.agentId) {
      this.#o.logger.warn("welcome names another agent; disconnecting", { agentId: frame.agentId });
      return this.#end(s, CLOSE_HANDSHAKE_REFUSED, "welcome not for this agent");
    }
    const { clock, logger } = this.#o;
    if (s.handshakeTimer !== undefined) clock.clearTimeout(s.handshakeTimer);
    s.phase = "welcomed";
    s.serverId = frame.serverId;
    s.heartbeatMs = frame.heartbeatMs;
    this.#armSilence(s);
    this.#connected = true;
    this.#attempt = 0;
    logger.info("welcomed", { server: frame.serverId, url: s.url });
    this.#o.audit.append({
      actor: this.#actor(s),
      action: "handshake.ok",
      target: this.#o.agentId,
      outcome: "ok",
      reason: `welcomed at ${s.url}`,
    });
    const beat = () => {
      s.heartbeatTimer = clock.setTimeout(() => {
        if (s.ending) return;
        const now = clock.now();
        const alive: Alive = {
          v: PROTOCOL_VERSION,
          id: this.#newId("a"),
          type: "alive",
          ts: now,
          uptimeMs: Math.max(0, now - this.#startedAt),
          running: this.#o.running(),
        };
        s.socket.send(encodeFrame(alive));
        beat();
      }, frame.heartbeatMs);
    };
    beat();
    for (const w of this.#waiters.splice(0)) w.resolve();
    this.#o.onWelcome?.(frame);
  }

  /**
   * (Re)starts the silence deadline: a server that answers no `alive` for
   * `silenceHeartbeats` intervals is presumed gone (a half-open connection), and the agent
   * closes the socket and reconnects.
   */
  #armSilence(s: Session): void {
    const { clock, logger } = this.#o;
    if (s.heartbeatMs === undefined || s.ending) return;
    if (s.silenceTimer !== undefined) clock.clearTimeout(s.silenceTimer);
    const limit = s.heartbeatMs * (this.#o.silenceHeartbeats ?? 3);
    s.silenceTimer = clock.setTimeout(() => {
      s.silenceTimer = undefined;
      logger.warn("server went silent; reconnecting", { url: s.url, silentMs: limit });
      this.#end(s, CLOSE_HANDSHAKE_REFUSED, "server went silent");
    }, limit);
  }

  /** A valid frame at the wrong time. */
  #unexpected(s: Session, frame: ServerFrame): void {
    const when = s.phase === "welcomed" ? "after the welcome" : "during the handshake";
    this.#reject(
      s,
      frame.id,
      new JwError("unexpected_message", `"${frame.type}" frame not expected ${when}`),
    );
  }

  /** Answers a bad frame with an `error` frame and audits it; the connection stays. */
  #reject(s: Session, ref: string | undefined, err: JwError): void {
    this.#o.logger.warn("rejected a frame from the server", { code: err.code, error: err.message });
    this.#o.audit.append({
      actor: this.#actor(s),
      action: "frame.rejected",
      target: this.#o.agentId,
      outcome: "denied",
      reason: `${err.code}: ${err.message}`,
    });
    const reply: ErrorFrame = {
      v: PROTOCOL_VERSION,
      id: this.#newId("e"),
      type: "error",
      error: { code: err.code, message: err.message },
    };
    if (ref !== undefined) reply.ref = ref;
    s.socket.send(encodeFrame(reply));
  }

  #end(s: Session, code: number, reason: string): void {
    if (s.ending) return;
    s.ending = true;
    s.socket.close(code, reason);
  }

  #actor(s: Session): string {
    if (s.serverId !== undefined) return `server:${s.serverId}`;
    try {
      return `server:${new URL(s.url).host}`;
    } catch {
      return "server:unknown";
    }
  }

  /** A frame id: a letter prefix keeps it valid for the Id schema (no leading - or _). */
  #newId(prefix: string): string {
    return `${prefix}-${randomId(this.#o.random)}`;
  }
}
