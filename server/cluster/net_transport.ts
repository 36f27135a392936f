/**
 * The real gossip {@link Transport}: packets over UDP (`node:dgram`) and streams over TCP
 * (`Deno.listen`/`Deno.connect`), both on the same port number, like memberlist.
 *
 * Streams carry whole messages, each framed by a 4-byte big-endian length. The reader never
 * allocates more than the bytes that actually arrived, so a peer lying about a length cannot
 * make it reserve memory; a length over the limit or a frame cut short closes the stream. A
 * peer cannot hold sockets forever: each remote host has a cap on concurrent inbound streams,
 * and a stream with no traffic for the idle timeout is closed. All timeouts run on the Clock.
 *
 * @module
 */
import dgram from "node:dgram";
import { isIP } from "node:net";
import type { Clock, TimerId } from "../../shared/clock.ts";
import { JwError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/log.ts";
import { formatHostPort, parseHostPort } from "./seeds.ts";
import {
  DEFAULT_PACKET_LIMIT,
  DEFAULT_STREAM_MESSAGE_LIMIT,
  type Packet,
  type Stream,
  type Transport,
} from "./transport.ts";

/** Default cap on concurrent inbound streams from one remote host. */
export const DEFAULT_MAX_INBOUND_STREAMS_PER_PEER = 128;

/** Default idle timeout of a stream (ms): no byte either way for this long closes it. */
export const DEFAULT_STREAM_IDLE_TIMEOUT_MS = 30_000;

/** Options for {@link createNetTransport}. */
export interface NetTransportOptions {
  /**
   * "ip:port" to bind UDP and TCP on, e.g. "0.0.0.0:7946" or "[::1]:7946". Port 0 picks a
   * free port, the same for both.
   */
  bind: string;
  /** "host:port" peers should use to reach this server. Default: the bound address. */
  advertise?: string;
  /** Drives stream timeouts and stamps received packets. */
  clock: Clock;
  logger: Logger;
  /** Largest packet sent or accepted (bytes); bigger ones are dropped and counted. Default 1400. */
  packetLimit?: number;
  /** Largest stream message sent or accepted (bytes). Default 16 MiB. */
  streamMessageLimit?: number;
  /** Concurrent inbound streams allowed from one remote IP; more are refused. Default 128. */
  maxInboundStreamsPerPeer?: number;
  /** A stream with no byte sent or received for this long (ms) is closed. Default 30000. */
  streamIdleTimeoutMs?: number;
}

/** Why packets were dropped. */
export interface PacketDrops {
  /** Outbound packets over `packetLimit`. */
  oversizedOutbound: number;
  /** Inbound packets over `packetLimit`. */
  oversizedInbound: number;
  /** Outbound packets to a string that is not "host:port". */
  badAddress: number;
  /** Outbound packets the socket failed to send (unreachable, wrong address family...). */
  sendFailed: number;
  /** Inbound packets that arrived before a handler was set. */
  noHandler: number;
  /** Outbound packets after close(). */
  closed: number;
}

/** Why streams ended abnormally. */
export interface StreamFailures {
  /** The peer announced a message over `streamMessageLimit`. */
  frameTooLarge: number;
  /** The peer closed the connection in the middle of a message. */
  truncated: number;
  /** No traffic for `streamIdleTimeoutMs`. */
  idle: number;
  /** Inbound connections refused: the remote host had `maxInboundStreamsPerPeer` open. */
  refusedPeerLimit: number;
  /** Inbound connections refused: no stream handler was set. */
  refusedNoHandler: number;
}

/** Counters since the transport started. */
export interface NetTransportStats {
  packetsSent: number;
  packetBytesSent: number;
  packetsReceived: number;
  packetBytesReceived: number;
  packetsDropped: PacketDrops;
  /** Streams this side opened. */
  streamsOpened: number;
  /** Streams peers opened and a handler received. */
  streamsAccepted: number;
  streamMessagesSent: number;
  streamBytesSent: number;
  streamMessagesReceived: number;
  streamBytesReceived: number;
  streamFailures: StreamFailures;
}

/** A {@link Transport} on real sockets, with counters. */
export interface NetTransport extends Transport, AsyncDisposable {
  /** The "ip:port" actually bound (UDP and TCP), whatever `advertise` says. */
  readonly boundAddress: string;
  /** A snapshot of the counters. */
  stats(): NetTransportStats;
}

function positiveInt(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v <= 0) {
    throw new JwError("config", `bad ${name} ${value}: must be a positive integer`);
  }
  return v;
}

/**
 * Binds UDP and TCP on `options.bind` and starts receiving. With port 0 it binds UDP on a
 * free port first, then TCP on the same number, retrying a few times when TCP finds that
 * port taken.
 *
 * @throws JwError `config` for a bad address or option, or when the port cannot be bound.
 */
export async function createNetTransport(options: NetTransportOptions): Promise<NetTransport> {
  const bind = parseHostPort(options.bind, "bind address");
  const family = isIP(bind.host);
  if (family === 0) {
    throw new JwError("config", `bad bind address ${JSON.stringify(options.bind)}: not an IP`);
  }
  if (options.advertise !== undefined) {
    const adv = parseHostPort(options.advertise, "advertise address");
    if (adv.port === 0) {
      throw new JwError("config", `bad advertise address ${JSON.stringify(options.advertise)}`);
    }
  }
  const limits: Limits = {
    packet: positiveInt("packet limit", options.packetLimit, DEFAULT_PACKET_LIMIT),
    message: positiveInt(
      "stream message limit",
      options.streamMessageLimit,
      DEFAULT_STREAM_MESSAGE_LIMIT,
    ),
    perPeer: positiveInt(
      "inbound streams per peer",
      options.maxInboundStreamsPerPeer,
      DEFAULT_MAX_INBOUND_STREAMS_PER_PEER,
    ),
    idleMs: positiveInt(
      "stream idle timeout",
      options.streamIdleTimeoutMs,
      DEFAULT_STREAM_IDLE_TIMEOUT_MS,
    ),
  };
  const attempts = bind.port === 0 ? 5 : 1;
  for (let attempt = 1;; attempt++) {
    const udp = dgram.createSocket(family === 6 ? "udp6" : "udp4");
    try {
      await new Promise<void>((resolve, reject) => {
        udp.once("error", reject);
        udp.bind(bind.port, bind.host, () => {
          udp.off("error", reject);
          resolve();
        });
      });
    } catch (err) {
      await closeUdp(udp);
      throw bindError(options.bind, "UDP", err);
    }
    const port = udp.address().port;
    let listener: Deno.TcpListener;
    try {
      listener = Deno.listen({ hostname: bind.host, port, transport: "tcp" });
    } catch (err) {
      await closeUdp(udp);
      if (err instanceof Deno.errors.AddrInUse && attempt < attempts) continue;
      throw bindError(formatHostPort(bind.host, port), "TCP", err);
    }
    return new NetTransportImpl(options, limits, udp, listener, formatHostPort(bind.host, port));
  }
}

function bindError(address: string, proto: string, err: unknown): JwError {
  const why = err instanceof Error ? err.message : String(err);
  return new JwError("config", `cannot bind gossip ${proto} on ${address}: ${why}`, { cause: err });
}

function closeUdp(udp: dgram.Socket): Promise<void> {
  return new Promise((resolve) => {
    try {
      udp.close(() => resolve());
    } catch {
      resolve(); // not bound, or already closed
    }
  });
}

/** "ip:port" of a socket peer; IPv4-mapped IPv6 addresses become plain IPv4. */
function peerAddress(ip: string, port: number): string {
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return formatHostPort(v4 ? v4[1] : ip, port);
}

interface Limits {
  packet: number;
  message: number;
  perPeer: number;
  idleMs: number;
}

function newStats(): NetTransportStats {
  return {
    packetsSent: 0,
    packetBytesSent: 0,
    packetsReceived: 0,
    packetBytesReceived: 0,
    packetsDropped: {
      oversizedOutbound: 0,
      oversizedInbound: 0,
      badAddress: 0,
      sendFailed: 0,
      noHandler: 0,
      closed: 0,
    },
    streamsOpened: 0,
    streamsAccepted: 0,
    streamMessagesSent: 0,
    streamBytesSent: 0,
    streamMessagesReceived: 0,
    streamBytesReceived: 0,
    streamFailures: {
      frameTooLarge: 0,
      truncated: 0,
      idle: 0,
      refusedPeerLimit: 0,
      refusedNoHandler: 0,
    },
  };
}

class NetTransportImpl implements NetTransport {
  readonly address: string;
  readonly boundAddress: string;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #limits: Limits;
  readonly #udp: dgram.Socket;
  readonly #listener: Deno.TcpListener;
  readonly #stats = newStats();
  /** Every stream until its socket operations have settled. */
  readonly #streams = new Set<NetStream>();
  /** Connects still in flight (including ones that timed out), so close() can await them. */
  readonly #opening = new Set<Promise<unknown>>();
  readonly #inboundPerHost = new Map<string, number>();
  /** Aborted by close(): stops the accept backoff and connects in flight. */
  readonly #shutdown = new AbortController();
  readonly #acceptLoop: Promise<void>;
  #packetHandler: ((packet: Packet) => void) | null = null;
  #streamHandler: ((stream: Stream) => void) | null = null;
  /** Set by the first close(), before anything is torn down. */
  #stopped = false;
  #closing: Promise<void> | null = null;

  constructor(
    options: NetTransportOptions,
    limits: Limits,
    udp: dgram.Socket,
    listener: Deno.TcpListener,
    boundAddress: string,
  ) {
    this.#clock = options.clock;
    this.#logger = options.logger;
    this.#limits = limits;
    this.#udp = udp;
    this.#listener = listener;
    this.boundAddress = boundAddress;
    this.address = options.advertise ?? boundAddress;
    udp.on("message", (msg, rinfo) => this.#receivePacket(msg, rinfo));
    udp.on("error", (err) => this.#logger.warn("gossip UDP socket error", { error: err.message }));
    this.#acceptLoop = this.#accept();
  }

  stats(): NetTransportStats {
    return structuredClone(this.#stats);
  }

  // ---- packets ----

  sendPacket(to: string, data: Uint8Array): void {
    const drops = this.#stats.packetsDropped;
    if (this.#stopped) {
      drops.closed++;
      return;
    }
    if (data.byteLength > this.#limits.packet) {
      drops.oversizedOutbound++;
      this.#logger.debug("dropped oversized outbound packet", { to, bytes: data.byteLength });
      return;
    }
    let addr;
    try {
      addr = parseHostPort(to);
    } catch {
      drops.badAddress++;
      this.#logger.debug("dropped packet to a bad address", { to });
      return;
    }
    const failed = (err: unknown) => {
      drops.sendFailed++;
      this.#logger.debug("packet send failed", { to, error: String(err) });
    };
    try {
      this.#udp.send(data, addr.port, addr.host, (err) => {
        if (err) return failed(err);
        this.#stats.packetsSent++;
        this.#stats.packetBytesSent += data.byteLength;
      });
    } catch (err) {
      failed(err);
    }
  }

  onPacket(handler: (packet: Packet) => void): void {
    this.#packetHandler = handler;
  }

  #receivePacket(msg: Uint8Array, rinfo: dgram.RemoteInfo): void {
    const from = peerAddress(rinfo.address, rinfo.port);
    if (msg.byteLength > this.#limits.packet) {
      this.#stats.packetsDropped.oversizedInbound++;
      this.#logger.debug("dropped oversized inbound packet", { from, bytes: msg.byteLength });
      return;
    }
    const handler = this.#packetHandler;
    if (!handler) {
      this.#stats.packetsDropped.noHandler++;
      return;
    }
    this.#stats.packetsReceived++;
    this.#stats.packetBytesReceived += msg.byteLength;
    try {
      handler({ from, data: new Uint8Array(msg), at: this.#clock.now() });
    } catch (err) {
      this.#logger.warn("packet handler failed", { from, error: String(err) });
    }
  }

  // ---- streams ----

  onStream(handler: (stream: Stream) => void): void {
    this.#streamHandler = handler;
  }

  async openStream(to: string, timeoutMs: number): Promise<Stream> {
    if (this.#stopped) throw new JwError("closed", "the gossip transport is closed");
    let addr;
    try {
      addr = parseHostPort(to);
    } catch (err) {
      throw new JwError("not_connected", `cannot open a stream to ${JSON.stringify(to)}`, {
        cause: err,
      });
    }
    const remote = formatHostPort(addr.host, addr.port);
    const abort = new AbortController();
    let timedOut = false;
    let timer: TimerId | undefined;
    const attempt = Deno.connect({
      hostname: addr.host,
      port: addr.port,
      signal: AbortSignal.any([abort.signal, this.#shutdown.signal]),
    });
    // A connect that loses the race with the timeout (or close()) is closed when it lands.
    const settled = attempt.then(
      (conn) => {
        if (timedOut || this.#stopped) closeQuietly(conn);
      },
      () => {},
    ).finally(() => this.#opening.delete(settled));
    this.#opening.add(settled);
    const conn = await new Promise<Deno.TcpConn>((resolve, reject) => {
      timer = this.#clock.setTimeout(() => {
        timedOut = true;
        abort.abort();
        reject(new JwError("timeout", `opening a stream to ${remote} took over ${timeoutMs} ms`));
      }, timeoutMs);
      attempt.then(resolve, (err) => {
        if (this.#stopped) return reject(new JwError("closed", "the gossip transport is closed"));
        const why = err instanceof Error ? err.message : String(err);
        reject(new JwError("not_connected", `cannot connect to ${remote}: ${why}`, { cause: err }));
      });
    }).finally(() => this.#clock.clearTimeout(timer!));
    if (this.#stopped) {
      closeQuietly(conn);
      throw new JwError("closed", "the gossip transport is closed");
    }
    this.#stats.streamsOpened++;
    return this.#track(conn, remote, null);
  }

  async #accept(): Promise<void> {
    let backoffMs = 0;
    while (!this.#stopped) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
        backoffMs = 0;
      } catch (err) {
        if (this.#stopped) return;
        // Out of file descriptors and the like: back off rather than spin.
        backoffMs = Math.min(Math.max(backoffMs * 2, 5), 1000);
        this.#logger.warn("gossip TCP accept failed", { error: String(err), retryMs: backoffMs });
        try {
          await this.#clock.sleep(backoffMs, this.#shutdown.signal);
        } catch {
          return;
        }
        continue;
      }
      this.#admit(conn);
    }
  }

  #admit(conn: Deno.TcpConn): void {
    const { hostname, port } = conn.remoteAddr;
    const remote = peerAddress(hostname, port);
    const failures = this.#stats.streamFailures;
    const handler = this.#streamHandler;
    if (this.#stopped || !handler) {
      if (!this.#stopped) failures.refusedNoHandler++;
      closeQuietly(conn);
      return;
    }
    const open = this.#inboundPerHost.get(hostname) ?? 0;
    if (open >= this.#limits.perPeer) {
      failures.refusedPeerLimit++;
      this.#logger.debug("refused inbound stream: too many from this host", { remote, open });
      closeQuietly(conn);
      return;
    }
    this.#inboundPerHost.set(hostname, open + 1);
    this.#stats.streamsAccepted++;
    const stream = this.#track(conn, remote, hostname);
    try {
      handler(stream);
    } catch (err) {
      this.#logger.warn("stream handler failed", { remote, error: String(err) });
      stream.close();
    }
  }

  #track(conn: Deno.TcpConn, remote: string, inboundHost: string | null): NetStream {
    const stream = new NetStream(conn, remote, {
      clock: this.#clock,
      logger: this.#logger,
      limits: this.#limits,
      stats: this.#stats,
      onClosed: () => {
        if (inboundHost === null) return;
        const left = (this.#inboundPerHost.get(inboundHost) ?? 1) - 1;
        if (left > 0) this.#inboundPerHost.set(inboundHost, left);
        else this.#inboundPerHost.delete(inboundHost);
      },
    });
    this.#streams.add(stream);
    stream.settled.then(() => this.#streams.delete(stream));
    return stream;
  }

  // ---- lifecycle ----

  close(): Promise<void> {
    if (!this.#closing) {
      this.#stopped = true;
      this.#closing = this.#close();
    }
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#shutdown.abort();
    closeQuietly(this.#listener);
    for (const stream of this.#streams) stream.close();
    const udpClosed = closeUdp(this.#udp);
    await this.#acceptLoop;
    await Promise.all([...this.#opening]);
    await Promise.all([...this.#streams].map((s) => s.settled));
    await udpClosed;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function closeQuietly(closer: { close(): void }): void {
  try {
    closer.close();
  } catch {
    // already closed
  }
}

interface StreamContext {
  clock: Clock;
  logger: Logger;
  limits: Limits;
  stats: NetTransportStats;
  onClosed: () => void;
}

/** The outcome of reading one message: never a rejection, so no read is left unhandled. */
type ReadResult = { message: Uint8Array | null } | { error: JwError };

/** Largest single read: a frame's memory grows only with the bytes that actually arrive. */
const READ_CHUNK = 64 * 1024;
/** Smallest read, so small messages that follow each other come in one read. */
const MIN_READ = 4096;

/**
 * One TCP connection carrying length-framed messages. Reads happen only while someone waits
 * in receive() (no unbounded buffering); writes are queued so concurrent send() calls never
 * interleave their frames. One receive() at a time. The peer's end of stream closes this
 * side too (streams are not half-closed).
 */
class NetStream implements Stream {
  readonly remote: string;
  readonly #conn: Deno.TcpConn;
  readonly #ctx: StreamContext;
  /** Bytes read past the end of the previous message. */
  #leftover: Uint8Array = new Uint8Array(0);
  /** The message being read; kept across a receive() timeout so no bytes are lost. */
  #reading: Promise<ReadResult> | null = null;
  #receiving = false;
  #writing: Promise<void> = Promise.resolve();
  /** Set once the stream can deliver nothing more: end of stream, a framing error, close(). */
  #ended: ReadResult | null = null;
  #closed = false;
  #lastActivity: number;
  #idleTimer: TimerId | undefined;
  readonly #settled = Promise.withResolvers<void>();

  constructor(conn: Deno.TcpConn, remote: string, ctx: StreamContext) {
    this.#conn = conn;
    this.remote = remote;
    this.#ctx = ctx;
    this.#lastActivity = ctx.clock.now();
    this.#armIdle(ctx.limits.idleMs);
  }

  /** Resolves once the stream is closed and its socket operations have finished. */
  get settled(): Promise<void> {
    return this.#settled.promise;
  }

  send(message: Uint8Array): Promise<void> {
    if (this.#closed) return Promise.reject(this.#closedError());
    const limit = this.#ctx.limits.message;
    if (message.byteLength > limit) {
      return Promise.reject(
        new JwError(
          "frame_too_large",
          `stream message of ${message.byteLength} bytes over ${limit}`,
          {
            detail: { limit },
          },
        ),
      );
    }
    const frame = new Uint8Array(4 + message.byteLength);
    new DataView(frame.buffer).setUint32(0, message.byteLength);
    frame.set(message, 4);
    const write = this.#writing.then(() => this.#writeAll(frame));
    this.#writing = write.catch(() => {});
    return write.then(() => {
      this.#ctx.stats.streamMessagesSent++;
      this.#ctx.stats.streamBytesSent += message.byteLength;
    });
  }

  async #writeAll(frame: Uint8Array): Promise<void> {
    if (this.#closed) throw this.#closedError();
    try {
      for (let off = 0; off < frame.byteLength;) {
        off += await this.#conn.write(frame.subarray(off));
        this.#lastActivity = this.#ctx.clock.now();
      }
    } catch (err) {
      this.close();
      throw new JwError("closed", `stream to ${this.remote} failed: ${String(err)}`, {
        cause: err,
      });
    }
  }

  receive(timeoutMs: number): Promise<Uint8Array | null> {
    if (this.#ended) return unwrap(this.#ended);
    if (this.#receiving) {
      return Promise.reject(new JwError("internal", "receive() called while one is pending"));
    }
    this.#receiving = true;
    this.#reading ??= this.#readMessage();
    const reading = this.#reading;
    return new Promise<Uint8Array | null>((resolve, reject) => {
      let timedOut = false;
      const timer = this.#ctx.clock.setTimeout(() => {
        // The read goes on: the next receive() gets its message.
        timedOut = true;
        this.#receiving = false;
        reject(new JwError("timeout", `no message from ${this.remote} within ${timeoutMs} ms`));
      }, timeoutMs);
      reading.then((result) => {
        if (timedOut) return;
        this.#ctx.clock.clearTimeout(timer);
        this.#reading = null;
        this.#receiving = false;
        if ("error" in result) reject(result.error);
        else resolve(result.message);
      });
    });
  }

  async #readMessage(): Promise<ReadResult> {
    const header = await this.#readExactly(4, true);
    if (!(header instanceof Uint8Array)) return header;
    const length = new DataView(header.buffer, header.byteOffset, 4).getUint32(0);
    const limit = this.#ctx.limits.message;
    if (length > limit) {
      this.#ctx.stats.streamFailures.frameTooLarge++;
      this.#ctx.logger.warn("closed stream: message over the limit", {
        remote: this.remote,
        length,
        limit,
      });
      return this.#fail(
        new JwError("frame_too_large", `stream message of ${length} bytes over ${limit}`, {
          detail: { limit },
        }),
      );
    }
    const body = await this.#readExactly(length, false);
    if (!(body instanceof Uint8Array)) return body;
    this.#ctx.stats.streamMessagesReceived++;
    this.#ctx.stats.streamBytesReceived += length;
    return { message: body };
  }

  /**
   * Reads exactly `n` bytes. End of stream before the first byte is a clean end when
   * `atBoundary`; anywhere else it is a truncated frame.
   */
  async #readExactly(n: number, atBoundary: boolean): Promise<Uint8Array | ReadResult> {
    const parts: Uint8Array[] = [];
    let have = 0;
    const take = (bytes: Uint8Array) => {
      const used = bytes.subarray(0, n - have);
      parts.push(used);
      have += used.byteLength;
      this.#leftover = bytes.subarray(used.byteLength);
    };
    if (this.#leftover.byteLength > 0) take(this.#leftover);
    while (have < n) {
      if (this.#closed) return this.#ended ?? { error: this.#closedError() };
      const chunk = new Uint8Array(Math.min(READ_CHUNK, Math.max(n - have, MIN_READ)));
      let got: number | null;
      try {
        got = await this.#conn.read(chunk);
      } catch (err) {
        if (this.#closed) return this.#ended ?? { error: this.#closedError() };
        return this.#fail(
          new JwError("closed", `stream from ${this.remote} failed: ${String(err)}`, {
            cause: err,
          }),
        );
      }
      if (got === null) {
        if (atBoundary && have === 0) {
          this.#ended = { message: null };
          this.close();
          return this.#ended;
        }
        this.#ctx.stats.streamFailures.truncated++;
        this.#ctx.logger.debug("closed stream: message cut short", { remote: this.remote });
        return this.#fail(
          new JwError("invalid_message", `stream from ${this.remote} ended inside a message`, {
            detail: { expected: n, received: have },
          }),
        );
      }
      this.#lastActivity = this.#ctx.clock.now();
      take(chunk.subarray(0, got));
    }
    // One part filling its whole buffer is handed over as is; otherwise copy, so a small
    // message does not pin a large read buffer.
    return parts.length === 1 && parts[0].byteLength === parts[0].buffer.byteLength
      ? parts[0]
      : concat(parts, n);
  }

  #fail(error: JwError): ReadResult {
    this.#ended ??= { error };
    this.close();
    return this.#ended;
  }

  #closedError(): JwError {
    return new JwError("closed", `stream to ${this.remote} is closed`);
  }

  #armIdle(ms: number): void {
    this.#idleTimer = this.#ctx.clock.setTimeout(() => {
      const idleFor = this.#ctx.clock.now() - this.#lastActivity;
      const idleMs = this.#ctx.limits.idleMs;
      if (idleFor < idleMs) return this.#armIdle(idleMs - idleFor);
      this.#idleTimer = undefined;
      this.#ctx.stats.streamFailures.idle++;
      this.#ctx.logger.debug("closed idle stream", { remote: this.remote, idleMs });
      this.#fail(new JwError("timeout", `stream with ${this.remote} idle for ${idleMs} ms`));
    }, ms);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#ended ??= { error: this.#closedError() };
    if (this.#idleTimer !== undefined) this.#ctx.clock.clearTimeout(this.#idleTimer);
    closeQuietly(this.#conn);
    this.#ctx.onClosed();
    const reading = this.#reading ?? Promise.resolve();
    Promise.all([reading, this.#writing]).then(() => this.#settled.resolve());
  }
}

function unwrap(result: ReadResult): Promise<Uint8Array | null> {
  return "error" in result ? Promise.reject(result.error) : Promise.resolve(result.message);
}

function concat(parts: Uint8Array[], length: number): Uint8Array {
  const out = new Uint8Array(length);
  let off = 0;
  for (const part of parts) {
    out.set(part, off);
    off += part.byteLength;
  }
  return out;
}
