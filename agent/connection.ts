/**
 * The agent's connection to its server: one WebSocket at a time, the challenge handshake,
 * redirects (bounded hops, `retryAfter` honoured, also after the welcome as a handoff),
 * heartbeats, and reconnects with exponential backoff and full jitter. Every incoming frame
 * is schema-checked; a bad frame gets an `error` frame back and the connection stays up. All
 * timers go through the Clock.
 *
 * Where it connects: once a server has sent the cluster's list (`servers`), the servers of
 * that list ranked for this agent (`rank` in shared/lrw.ts: its owner first), skipping those
 * that failed lately, then the discovered URLs (DNS SRV, seeds). Before any list has arrived:
 * the discovered URLs, then the list remembered from an earlier run, ranked the same way.
 * When a welcomed connection is lost, the first retry goes to the next-ranked server after a
 * random delay below `failoverMs`, so the agents of a dead server spread over the others in
 * space (by rank) and in time (by the delay).
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
  type ServerEntry,
  type ServerFrame,
  serverToAgent,
  type Welcome,
} from "../shared/protocol/mod.ts";
import { type BackoffBounds, backoffDelay } from "./backoff.ts";
import type { AuditSink } from "./jobs/mod.ts";
import { checkServerList, rankServers, RecentFailures } from "./servers.ts";
import type { Socket, Transport } from "./transport.ts";
import { agentUrl } from "./url.ts";

/** Close code the agent uses when it gives up on a handshake (bad challenge, timeout). */
export const CLOSE_HANDSHAKE_REFUSED = 4000;

/** Default longest random delay before the first retry after a welcomed connection is lost. */
export const DEFAULT_FAILOVER_MS = 5000;

/** Default time a server that failed is skipped and named in `hello.avoid`. */
export const DEFAULT_AVOID_MS = 60_000;
/** Most `hello.avoidAgo` may say (the protocol's bound). */
const MAX_AVOID_AGO_MS = 86_400_000;

/**
 * Where the connection finds server URLs when its server list gives none; `createDiscovery`
 * (discovery.ts) makes one from DNS SRV and seeds.
 */
export interface UrlSource {
  /** URLs (http(s) or ws(s)) to try in order, looked up now. Should not reject. */
  urls(): Promise<string[]>;
}

/** Options for {@link startConnection}. At least one of `discovery`, `server`, `servers`. */
export interface ConnectionOptions {
  /** This agent's id. */
  agentId: string;
  /** Discovered server URLs (DNS SRV, seeds). */
  discovery?: UrlSource;
  /** One seed URL (http(s) or ws(s)), tried after `discovery`'s URLs. */
  server?: string;
  /**
   * The server list remembered from an earlier run (see servers.ts), ranked and tried after
   * the discovered URLs until a `servers` frame arrives. Default none.
   */
  servers?: readonly ServerEntry[];
  /** Called with the list of each valid `servers` frame (to remember it). */
  onServers?(servers: ServerEntry[]): void;
  /**
   * Longest random delay (uniform in [0, failoverMs)) before the first retry after a
   * welcomed connection is lost. Default {@link DEFAULT_FAILOVER_MS}.
   */
  failoverMs?: number;
  /**
   * How long a server that failed (no welcome, no redirect) or was lost is skipped when
   * ranking and named in `hello.avoid`. Default {@link DEFAULT_AVOID_MS}.
   */
  avoidMs?: number;
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
  /**
   * Redirects followed in a row (sent in `hello.hops`) before the agent goes back to its
   * candidates with backoff. Default 5.
   */
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
  /** The WebSocket URL of the server that welcomed us last (kept after a disconnect). */
  readonly url: string | undefined;
  /**
   * The server list in use: the last `servers` frame's, or the remembered one before any
   * arrived.
   */
  readonly servers: readonly ServerEntry[];
  /** Resolves at the next welcome, or at once while connected; rejects (`closed`) on close. */
  welcomed(): Promise<void>;
  /** Sends a frame if connected; false (nothing sent) otherwise. */
  send(frame: AgentFrame): boolean;
  /** Stops reconnecting and closes the socket with 1000. Idempotent; resolves when stopped. */
  close(): Promise<void>;
}

/** Where a redirect sends the agent. */
interface RedirectTarget {
  /** Agent endpoint URL. */
  url: string;
  /** Ms to wait before connecting. */
  retryAfter: number;
}

/** How one connection ended. */
interface Outcome {
  /** True when the server welcomed the agent on it. */
  welcomed: boolean;
  /** The welcoming server's id. */
  serverId?: string;
  /** Set when the server redirected the agent (during the handshake or after the welcome). */
  redirect?: RedirectTarget;
}

interface Session {
  socket: Socket;
  url: string;
  phase: "hello" | "challenged" | "welcomed";
  /** Set once the session is being ended by us; later frames are ignored. */
  ending: boolean;
  redirect?: RedirectTarget;
  serverId?: string;
  handshakeTimer?: TimerId;
  heartbeatTimer?: TimerId;
  /** Fires when the server has been silent too long after the welcome. */
  silenceTimer?: TimerId;
  /** Ends a handed-off session once its wait is over. */
  handoffTimer?: TimerId;
  /** Heartbeat interval from the welcome, ms. */
  heartbeatMs?: number;
}

/**
 * Starts connecting at once and keeps reconnecting until closed. Returns immediately.
 * @throws JwError `config` when `server` is not an http(s)/ws(s) URL, or when there is no
 *   `discovery`, `server` or `servers` at all.
 */
export function startConnection(options: ConnectionOptions): Connection {
  return new AgentConnection(options);
}

class AgentConnection implements Connection {
  readonly #o: ConnectionOptions;
  readonly #stop = new AbortController();
  readonly #startedAt: number;
  readonly #discovery: UrlSource;
  readonly #failures: RecentFailures;
  readonly #remembered: readonly ServerEntry[];
  readonly #loop: Promise<void>;
  #closed = false;
  #session: Session | undefined;
  #connected = false;
  #lastUrl: string | undefined;
  #attempt = 0;
  /** The list from the last `servers` frame of this run. */
  #live: readonly ServerEntry[] | undefined;
  /** The candidates of the current round, produced as they are needed. */
  #round: AsyncGenerator<string, void> | undefined;
  #waiters: { resolve: () => void; reject: (err: Error) => void }[] = [];

  constructor(options: ConnectionOptions) {
    this.#o = options;
    this.#startedAt = options.startedAt ?? options.clock.now();
    this.#remembered = [...(options.servers ?? [])];
    const seed = options.server === undefined ? [] : [agentUrl(options.server)];
    const discovery = options.discovery;
    if (!discovery && seed.length === 0 && this.#remembered.length === 0) {
      throw new JwError("config", "no server to connect to: no discovery, seed or server list");
    }
    this.#discovery = {
      urls: async () => [...(discovery ? await discovery.urls() : []), ...seed],
    };
    this.#failures = new RecentFailures(options.clock, options.avoidMs ?? DEFAULT_AVOID_MS);
    this.#loop = this.#run();
  }

  get connected(): boolean {
    return this.#connected;
  }

  get serverId(): string | undefined {
    return this.#connected ? this.#session?.serverId : undefined;
  }

  get url(): string | undefined {
    return this.#lastUrl;
  }

  get servers(): readonly ServerEntry[] {
    return this.#live ?? this.#remembered;
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
    const { logger } = this.#o;
    const maxRedirects = this.#o.maxRedirects ?? 5;
    let follow: { url: string; hops: number } | undefined;
    while (!this.#closed) {
      let url: string;
      let hops = 0;
      if (follow) {
        ({ url, hops } = follow);
        follow = undefined;
      } else {
        const next = await this.#nextCandidate();
        if (this.#closed) break;
        if (next === undefined) {
          logger.warn("no server to connect to; retrying later");
          if (!await this.#pause(this.#backoff())) break;
          continue;
        }
        url = next;
      }
      const outcome = await this.#connectOnce(url, hops);
      if (this.#closed) break;
      let delay: number;
      if (outcome.redirect) {
        // A welcome ends a row of redirects: a handoff starts a new one.
        const row = outcome.welcomed ? 0 : hops;
        if (row < maxRedirects) {
          follow = { url: outcome.redirect.url, hops: row + 1 };
          if (outcome.redirect.retryAfter > 0 && !await this.#pause(outcome.redirect.retryAfter)) {
            break;
          }
          continue;
        }
        logger.warn("too many redirects in a row; backing off", {
          hops: row,
          last: outcome.redirect.url,
        });
        delay = this.#backoff();
      } else {
        this.#failures.note(url, outcome.serverId);
        if (outcome.welcomed) {
          // The server is gone: go to the next-ranked one, after a spreading delay.
          this.#round = undefined;
          delay = this.#o.random.float() * (this.#o.failoverMs ?? DEFAULT_FAILOVER_MS);
          logger.debug("connection lost; trying the next server", { inMs: Math.round(delay) });
        } else {
          delay = this.#backoff();
        }
      }
      if (!await this.#pause(delay)) break;
    }
  }

  /** The next reconnect delay: exponential backoff with full jitter. */
  #backoff(): number {
    const delay = backoffDelay(this.#attempt++, this.#o.reconnect, this.#o.random);
    this.#o.logger.debug("reconnecting", { inMs: Math.round(delay), attempt: this.#attempt });
    return delay;
  }

  /** Waits `ms` on the Clock; false when the connection closed meanwhile. */
  async #pause(ms: number): Promise<boolean> {
    try {
      await this.#o.clock.sleep(ms, this.#stop.signal);
      return !this.#closed;
    } catch {
      return false;
    }
  }

  /**
   * The next URL of the current round, starting a new round when it is used up; undefined
   * when a new round has nothing either (or the connection closed while looking).
   */
  async #nextCandidate(): Promise<string | undefined> {
    let started = false;
    for (;;) {
      if (!this.#round) {
        if (started) return undefined;
        this.#round = this.#newRound();
        started = true;
      }
      const round = this.#round;
      const next = await this.#untilClosed(round.next());
      if (next === undefined) return undefined;
      if (!next.done) return next.value;
      if (this.#round === round) this.#round = undefined;
    }
  }

  /**
   * One round of candidates, each URL once: the ranked server list from the last `servers`
   * frame, then the discovered URLs; or, before any list arrived, the discovered URLs, then
   * the remembered list ranked. Servers that failed lately are skipped, unless that leaves
   * nothing to try. The discovered URLs are looked up only when the round gets to them.
   */
  async *#newRound(): AsyncGenerator<string, void> {
    const seen = new Set<string>();
    const skipped: string[] = [];
    const failures = this.#failures;
    const agentId = this.#o.agentId;
    const ranked = function* (list: readonly ServerEntry[]): Generator<string> {
      for (const server of rankServers(agentId, list)) {
        if (failures.has(server)) skipped.push(server.url);
        else if (!seen.has(server.url)) {
          seen.add(server.url);
          yield server.url;
        }
      }
    };
    const live = this.#live;
    if (live) yield* ranked(live);
    let discovered: string[] = [];
    try {
      discovered = await this.#discovery.urls();
    } catch (err) {
      this.#o.logger.warn("server discovery failed", { error: toJwError(err).message });
    }
    for (const raw of discovered) {
      let url: string;
      try {
        url = agentUrl(raw);
      } catch {
        continue;
      }
      if (!seen.has(url)) {
        seen.add(url);
        yield url;
      }
    }
    if (!live) yield* ranked(this.#remembered);
    if (seen.size === 0) {
      for (const url of skipped) {
        if (!seen.has(url)) {
          seen.add(url);
          yield url;
        }
      }
    }
  }

  /** `promise`'s value, or undefined once the connection closes first. */
  #untilClosed<T>(promise: Promise<T>): Promise<T | undefined> {
    if (this.#closed) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      const stop = () => resolve(undefined);
      this.#stop.signal.addEventListener("abort", stop, { once: true });
      promise.then(resolve, reject).finally(() => {
        this.#stop.signal.removeEventListener("abort", stop);
      });
    });
  }

  /** One connection, from connect to close; `hops` is the redirects followed to get here. */
  async #connectOnce(url: string, hops: number): Promise<Outcome> {
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
      return { welcomed: false };
    } finally {
      clock.clearTimeout(connectTimer);
      this.#stop.signal.removeEventListener("abort", abort);
    }
    const s: Session = { socket, url, phase: "hello", ending: false };
    if (this.#closed) {
      socket.close(1000, "agent stopping");
      await socket.closed;
      return { welcomed: false };
    }
    this.#session = s;
    logger.debug("connected; saying hello", { url, hops });
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
    if (hops > 0) hello.hops = hops;
    const avoid = this.#avoid(url);
    if (avoid.length > 0) {
      const now = clock.now();
      hello.avoid = avoid.map((f) => f.id);
      hello.avoidAgo = avoid.map((f) => Math.min(MAX_AVOID_AGO_MS, Math.max(0, now - f.at)));
    }
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
      if (s.handoffTimer !== undefined) clock.clearTimeout(s.handoffTimer);
      this.#session = undefined;
      if (s.phase === "welcomed") {
        this.#connected = false;
        this.#o.onDisconnect?.();
      }
    }
    const info = await socket.closed;
    logger.info("disconnected", { url, code: info.code, reason: info.reason || undefined });
    const outcome: Outcome = { welcomed: s.phase === "welcomed" };
    if (s.serverId !== undefined) outcome.serverId = s.serverId;
    if (s.redirect) outcome.redirect = s.redirect;
    return outcome;
  }

  /** The servers that failed lately and when, except the one at `url` we are connecting to. */
  #avoid(url: string): { id: string; at: number }[] {
    const known = rankServers(this.#o.agentId, this.servers);
    const here = known.find((server) => server.url === url)?.id;
    return this.#failures.avoid(known).filter((f) => f.id !== here);
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
        const retryAfter = frame.retryAfter ?? 0;
        this.#o.logger.info(
          s.phase === "welcomed" ? "handed off to another server" : "redirected",
          { from: s.url, to: target, reason: frame.reason, retryAfterMs: retryAfter || undefined },
        );
        if (s.phase === "welcomed" && retryAfter > 0) {
          // Handed off: keep serving here through the wait, then go. If this server goes
          // first, the agent goes to the new one at once.
          if (s.handoffTimer !== undefined) return;
          s.redirect = { url: target, retryAfter: 0 };
          s.handoffTimer = this.#o.clock.setTimeout(() => {
            s.handoffTimer = undefined;
            this.#end(s, 1000, "handed off");
          }, retryAfter);
          return;
        }
        s.redirect = { url: target, retryAfter };
        return this.#end(s, 1000, "redirected");
      }
      case "servers":
        if (s.phase !== "welcomed") return this.#unexpected(s, frame);
        try {
          checkServerList(frame.servers);
        } catch (err) {
          return this.#reject(s, frame.id, toJwError(err));
        }
        this.#live = frame.servers;
        this.#o.logger.debug("received the server list", {
          from: s.serverId,
          servers: frame.servers.map((server) => server.id).join(","),
        });
        this.#o.onServers?.(frame.servers);
        return;
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
    this.#lastUrl = s.url;
    s.heartbeatMs = frame.heartbeatMs;
    this.#armSilence(s);
    this.#connected = true;
    this.#attempt = 0;
    this.#round = undefined;
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
