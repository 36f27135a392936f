/**
 * The gossip Transport seam: best-effort packets (UDP) and reliable, message-framed streams
 * (TCP) between servers, addressed by "host:port" strings. Implementations: the real one over
 * UDP and TCP (net_transport.ts), an in-memory network for tests that can drop, delay,
 * duplicate and partition (mem_network.ts), and the sealing decorator that signs and checks
 * every packet and stream message (seal.ts).
 *
 * @module
 */

/** One received packet. */
export interface Packet {
  /** Sender's "host:port" as seen by the receiver (the UDP source address). */
  from: string;
  /** The packet's bytes. */
  data: Uint8Array;
  /** Receive time, ms since the epoch (from the transport's Clock). */
  at: number;
}

/** A reliable, ordered connection carrying whole messages (each sent as one unit). */
export interface Stream {
  /** The peer's "host:port". */
  readonly remote: string;
  /**
   * Sends one message.
   * @throws JwError `closed` when the stream is closed, `frame_too_large` past the limit.
   */
  send(message: Uint8Array): Promise<void>;
  /**
   * The next message, or null when the peer closed the stream.
   * @throws JwError `timeout` when none arrives within `timeoutMs`; `invalid_message` when
   *   the peer sent a malformed frame (the stream is closed then).
   */
  receive(timeoutMs: number): Promise<Uint8Array | null>;
  /** Closes the stream; idempotent. */
  close(): void;
}

/** Packets and streams to and from other servers. */
export interface Transport {
  /** The "host:port" this transport receives on (what peers should send to). */
  readonly address: string;
  /**
   * Sends a packet, best effort: never throws for network trouble (it is counted and
   * logged at debug instead).
   */
  sendPacket(to: string, data: Uint8Array): void;
  /** Sets the one handler for received packets. */
  onPacket(handler: (packet: Packet) => void): void;
  /**
   * Opens a stream to `to`.
   * @throws JwError `not_connected` when it cannot connect, `timeout` after `timeoutMs`.
   */
  openStream(to: string, timeoutMs: number): Promise<Stream>;
  /** Sets the one handler for streams peers open. */
  onStream(handler: (stream: Stream) => void): void;
  /** Stops receiving and closes every socket and stream. Idempotent. */
  close(): Promise<void>;
}

/** Largest packet a transport sends or accepts by default (bytes), like memberlist's UDP limit. */
export const DEFAULT_PACKET_LIMIT = 1400;

/** Largest stream message by default (a push-pull of a big cluster's state fits). */
export const DEFAULT_STREAM_MESSAGE_LIMIT = 16 * 1024 * 1024;
