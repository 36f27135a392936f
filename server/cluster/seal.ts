/**
 * Sealing: a {@link Transport} decorator that signs every outgoing gossip packet and
 * stream message with the cluster key, and passes on only incoming ones that verify.
 *
 * ## Wire form
 *
 * A sealed message is a JWS compact token in ASCII, `HEADER.PAYLOAD.SIGNATURE`, each part
 * base64url without padding:
 *
 * - HEADER: base64url of `{"alg":"HS256","typ":"jw-gossip","aud":CLUSTER,"kid":KID}`, with
 *   `"enc":"A256GCM"` added when encryption is on. It is constant per key and mode (see
 *   {@link tokenHeader}) and a receiver compares it as an exact string, so a token of
 *   another type, cluster, key or mode is never accepted.
 * - PAYLOAD: 8-byte big-endian `iat` (sender's clock, ms since the epoch), 8 random nonce
 *   bytes, then the message, or when encrypting the AES-256-GCM ciphertext of the message
 *   followed by its 16-byte tag.
 * - SIGNATURE: HMAC-SHA256(cluster key, ASCII of "HEADER.PAYLOAD").
 *
 * Encryption uses a key derived from the cluster key with HKDF-SHA256 (empty salt, info
 * "jw-gossip-aes"). The 12-byte IV is the 8 nonce bytes followed by the low 32 bits of
 * `iat`, big-endian, so it travels in the payload at no extra cost; two messages under one
 * key share an IV only if they draw the same 64-bit random nonce within the same
 * millisecond (modulo about 49 days), which is negligible at gossip rates. The GCM
 * additional data is the HEADER string. The HMAC is checked before anything is decrypted.
 *
 * ## Receiving
 *
 * Checks run in this order, and the first that fails drops the message and counts it under
 * its {@link DropReason}: size before decoding (`too_large`); a signature part at all
 * (`unsigned`); token shape and base64url (`malformed`); the exact HEADER
 * (`unknown_key`); the HMAC in constant time (`bad_signature`); payload layout
 * (`malformed`) and the message size after decoding (`too_large`); `iat` within
 * `windowMs` of the receiver's clock either way (`stale`); the (iat, nonce) pair not seen
 * before (`replayed`); decryption (`malformed`). A dropped packet is never answered and
 * nothing is thrown to the transport. A bad stream message closes the stream.
 *
 * The replay cache remembers each accepted (iat, nonce) until `iat + windowMs`, after
 * which the token is stale anyway. It holds at most `replayCacheLimit` entries; when full it
 * evicts the entry that expires first and from then on treats every token that expires no
 * later than it as `stale`. So a replay is never accepted: under a flood the acceptance
 * window only narrows from the old end (evictions are counted in {@link SealStats}).
 *
 * The cache is per receiver and the key is shared by the cluster, so a packet captured on
 * its way to one server can be delivered once to another server within the window; gossip
 * messages are idempotent under SWIM's incarnation rules, which is what makes that harmless.
 *
 * ## Size budget
 *
 * Sealing grows a message by a fixed part (header, dots, signature, iat and nonce, and the
 * GCM tag when encrypting) plus the base64url expansion of 4/3. Use
 * {@link SealedTransport.maxPacketMessage} (or {@link maxMessageSize}) to size compound
 * packets; {@link sealOverhead} gives the exact overhead for a message size. A packet whose
 * sealed form would exceed the packet limit is not sent and is counted as `unsendable`.
 *
 * @module
 */
import { createCipheriv, createDecipheriv, createHmac, timingSafeEqual } from "node:crypto";
import { Buffer } from "node:buffer";
import type { Clock } from "../../shared/clock.ts";
import { JwError } from "../../shared/errors.ts";
import type { Random } from "../../shared/random.ts";
import { type Keyring, type RingKey, tokenHeader } from "./keyring.ts";
import {
  DEFAULT_PACKET_LIMIT,
  DEFAULT_STREAM_MESSAGE_LIMIT,
  type Packet,
  type Stream,
  type Transport,
} from "./transport.ts";

/** Why an incoming packet or stream message was dropped. */
export type DropReason =
  /** No signature: plain bytes (no `.` at all), or a token with an empty signature part. */
  | "unsigned"
  /** The HEADER is right but the HMAC does not match (tampered, or forged without the key). */
  | "bad_signature"
  /** The HEADER is not one of an installed key's: unknown key, other cluster, other token
   * type, or the other encryption mode. */
  | "unknown_key"
  /** `iat` is outside the window around the receiver's clock (old or in the future). */
  | "stale"
  /** The same (iat, nonce) was accepted before within the window. */
  | "replayed"
  /** Not a well-formed sealed message: empty, wrong shape, bad base64url, impossible
   * lengths, or (from a key holder) a payload that is too short or does not decrypt. */
  | "malformed"
  /** Over the size limit before or after decoding. */
  | "too_large";

/** Every {@link DropReason}, in a stable order. */
export const DROP_REASONS: readonly DropReason[] = [
  "unsigned",
  "bad_signature",
  "unknown_key",
  "stale",
  "replayed",
  "malformed",
  "too_large",
];

/** Default for {@link SealOptions.windowMs}: ±30 s. */
export const DEFAULT_SEAL_WINDOW_MS = 30_000;

/** Default for {@link SealOptions.replayCacheLimit}. */
export const DEFAULT_REPLAY_CACHE_LIMIT = 65_536;

/** Bytes of `iat` plus nonce at the start of every payload. */
const PREFIX_BYTES = 16;
const NONCE_BYTES = 8;
const TAG_BYTES = 16;
/** Length of a base64url HMAC-SHA256 signature. */
const SIGNATURE_CHARS = 43;
/** Length of a key id (8 bytes, base64url). */
const KID_CHARS = 11;
const DOT = 0x2e;

/** Options of {@link sealTransport}. */
export interface SealOptions {
  /** Keys to sign with (the primary) and accept (all installed). */
  keyring: Keyring;
  /** Source of `iat` on sending and of "now" for the freshness check. */
  clock: Clock;
  /** Source of the nonces; use `cryptoRandom` outside tests. */
  random: Random;
  /**
   * How far `iat` may be from the receiver's clock, either way, in ms; default 30 000.
   * Servers' clocks must agree to well within this. Larger windows tolerate more skew and
   * keep more entries in the replay cache.
   */
  windowMs?: number;
  /**
   * Encrypt message bytes with AES-256-GCM; default false. Every server of a cluster must
   * agree: an encrypting server and a plain one drop each other's packets (`unknown_key`).
   */
  encrypt?: boolean;
  /** Largest sealed packet sent or accepted, in bytes; default {@link DEFAULT_PACKET_LIMIT}. */
  packetLimit?: number;
  /**
   * Largest sealed stream message sent or accepted, in bytes; default
   * {@link DEFAULT_STREAM_MESSAGE_LIMIT}. The largest message a caller can send is about
   * 3/4 of it ({@link SealedTransport.maxStreamMessage}).
   */
  streamMessageLimit?: number;
  /** Most (iat, nonce) pairs remembered; default 65 536 (a few MB at most). */
  replayCacheLimit?: number;
}

/** Counters of a {@link SealedTransport}, a snapshot. */
export interface SealStats {
  /** Dropped packets and stream messages by reason. */
  dropped: Record<DropReason, number>;
  /** Packets and stream messages that verified and were passed on. */
  verified: { packets: number; streamMessages: number };
  /** Verified packets and stream messages by key id (to see when an old key goes quiet). */
  verifiedByKey: Record<string, number>;
  /** Sealed packets and stream messages handed to the inner transport. */
  sent: { packets: number; streamMessages: number };
  /** Outgoing packets not sent because their sealed form exceeded the packet limit. */
  unsendable: number;
  /** Replay cache: current entries and entries evicted because it was full. */
  replayCache: { size: number; evicted: number };
}

/** A {@link Transport} that seals what it sends and verifies what it receives. */
export interface SealedTransport extends Transport, AsyncDisposable {
  /** Largest message whose sealed form fits the packet limit. */
  readonly maxPacketMessage: number;
  /** Largest message whose sealed form fits the stream message limit. */
  readonly maxStreamMessage: number;
  /** Bytes sealing adds to a message of `messageBytes` bytes in this transport's mode. */
  overhead(messageBytes: number): number;
  /** A snapshot of the counters. */
  stats(): SealStats;
}

/** What sealed sizes depend on: the cluster name (in the header) and the mode. */
export interface SealShape {
  /** The cluster name. */
  cluster: string;
  /** Whether encryption is on; default false. */
  encrypt?: boolean;
}

/** Exact size in bytes of a sealed message of `messageBytes` bytes. */
export function sealedSize(messageBytes: number, shape: SealShape): number {
  const payload = PREFIX_BYTES + messageBytes + (shape.encrypt ? TAG_BYTES : 0);
  return headerLength(shape) + 1 + base64urlLength(payload) + 1 + SIGNATURE_CHARS;
}

/** Bytes sealing adds to a message of `messageBytes` bytes. */
export function sealOverhead(messageBytes: number, shape: SealShape): number {
  return sealedSize(messageBytes, shape) - messageBytes;
}

/**
 * Largest message whose sealed form is at most `limit` bytes, or -1 when not even an
 * empty message fits.
 */
export function maxMessageSize(limit: number, shape: SealShape): number {
  const chars = limit - headerLength(shape) - 2 - SIGNATURE_CHARS;
  const n = Math.floor((3 * chars) / 4) - PREFIX_BYTES - (shape.encrypt ? TAG_BYTES : 0);
  return n < 0 ? -1 : n;
}

/**
 * Wraps `inner` so that every packet and stream message is sealed on the way out and
 * verified on the way in. The sealed transport owns `inner`: closing it closes `inner`.
 * Set handlers on the sealed transport, never on `inner`.
 *
 * @throws JwError `config` for a bad option (a limit too small to carry a message).
 */
export function sealTransport(inner: Transport, options: SealOptions): SealedTransport {
  const shape: SealShape = { cluster: options.keyring.cluster, encrypt: options.encrypt };
  const packetLimit = options.packetLimit ?? DEFAULT_PACKET_LIMIT;
  const streamLimit = options.streamMessageLimit ?? DEFAULT_STREAM_MESSAGE_LIMIT;
  const windowMs = options.windowMs ?? DEFAULT_SEAL_WINDOW_MS;
  const cacheLimit = options.replayCacheLimit ?? DEFAULT_REPLAY_CACHE_LIMIT;
  positiveInteger("windowMs", windowMs);
  positiveInteger("replayCacheLimit", cacheLimit);
  positiveInteger("packetLimit", packetLimit);
  positiveInteger("streamMessageLimit", streamLimit);
  const maxPacketMessage = maxMessageSize(packetLimit, shape);
  const maxStreamMessage = maxMessageSize(streamLimit, shape);
  if (maxPacketMessage < 1 || maxStreamMessage < 1) {
    throw new JwError(
      "config",
      `packet limit ${packetLimit} is too small for sealed gossip (needs at least ${
        sealedSize(1, shape)
      } bytes)`,
    );
  }

  const core = new SealCore(options, windowMs, cacheLimit);
  let packetHandler: ((packet: Packet) => void) | undefined;
  let streamHandler: ((stream: Stream) => void) | undefined;

  const transport: SealedTransport = {
    get address() {
      return inner.address;
    },
    maxPacketMessage,
    maxStreamMessage,
    overhead: (n) => sealOverhead(n, shape),
    stats: () => core.snapshot(),

    sendPacket(to, data) {
      if (data.length > maxPacketMessage) {
        core.unsendable++;
        return;
      }
      const sealed = core.seal(data);
      core.sent.packets++;
      inner.sendPacket(to, sealed);
    },

    onPacket(handler) {
      const first = packetHandler === undefined;
      packetHandler = handler;
      if (!first) return;
      inner.onPacket((packet) => {
        const opened = core.open(packet.data, packetLimit, maxPacketMessage);
        if (opened === undefined) return;
        core.verified.packets++;
        packetHandler!({ from: packet.from, data: opened, at: packet.at });
      });
    },

    async openStream(to, timeoutMs) {
      const stream = await inner.openStream(to, timeoutMs);
      return new SealedStream(stream, core, streamLimit, maxStreamMessage);
    },

    onStream(handler) {
      const first = streamHandler === undefined;
      streamHandler = handler;
      if (!first) return;
      inner.onStream((stream) => {
        streamHandler!(new SealedStream(stream, core, streamLimit, maxStreamMessage));
      });
    },

    close: () => inner.close(),
    [Symbol.asyncDispose]: () => inner.close(),
  };
  return transport;
}

/** A stream whose messages are sealed and verified; a bad incoming message closes it. */
class SealedStream implements Stream {
  #inner: Stream;
  #core: SealCore;
  #limit: number;
  #maxMessage: number;

  constructor(inner: Stream, core: SealCore, limit: number, maxMessage: number) {
    this.#inner = inner;
    this.#core = core;
    this.#limit = limit;
    this.#maxMessage = maxMessage;
  }

  get remote(): string {
    return this.#inner.remote;
  }

  async send(message: Uint8Array): Promise<void> {
    if (message.length > this.#maxMessage) {
      throw new JwError(
        "frame_too_large",
        `gossip stream message of ${message.length} bytes is over the sealed limit of ${this.#maxMessage}`,
        { detail: { limit: this.#maxMessage } },
      );
    }
    await this.#inner.send(this.#core.seal(message));
    this.#core.sent.streamMessages++;
  }

  async receive(timeoutMs: number): Promise<Uint8Array | null> {
    const data = await this.#inner.receive(timeoutMs);
    if (data === null) return null;
    const reasonBox: { reason?: DropReason } = {};
    const opened = this.#core.open(data, this.#limit, this.#maxMessage, reasonBox);
    if (opened === undefined) {
      this.#inner.close();
      throw new JwError(
        "invalid_message",
        `gossip stream message from ${this.#inner.remote} dropped (${reasonBox.reason}); stream closed`,
        { detail: { reason: reasonBox.reason } },
      );
    }
    this.#core.verified.streamMessages++;
    return opened;
  }

  close(): void {
    this.#inner.close();
  }
}

/** Sealing, opening and the counters, shared by a transport's packets and streams. */
class SealCore {
  readonly sent = { packets: 0, streamMessages: 0 };
  readonly verified = { packets: 0, streamMessages: 0 };
  readonly verifiedByKey = new Map<string, number>();
  readonly dropped = Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<
    DropReason,
    number
  >;
  unsendable = 0;

  #keyring: Keyring;
  #clock: Clock;
  #random: Random;
  #encrypt: boolean;
  #windowMs: number;
  #replay: ReplayCache;

  constructor(options: SealOptions, windowMs: number, cacheLimit: number) {
    this.#keyring = options.keyring;
    this.#clock = options.clock;
    this.#random = options.random;
    this.#encrypt = options.encrypt ?? false;
    this.#windowMs = windowMs;
    this.#replay = new ReplayCache(cacheLimit);
  }

  /** The sealed token of `message`, as ASCII bytes. */
  seal(message: Uint8Array): Uint8Array {
    const key = this.#keyring.primary();
    const header = this.#encrypt ? key.headers.encrypted : key.headers.plain;
    const iat = Math.max(0, Math.floor(this.#clock.now()));
    const nonce = this.#random.bytes(NONCE_BYTES);
    const prefix = Buffer.alloc(PREFIX_BYTES);
    writeIat(prefix, iat);
    prefix.set(nonce.subarray(0, NONCE_BYTES), 8);
    const body = this.#encrypt ? encrypt(key, header, prefix, message) : [message];
    const payload = Buffer.concat([prefix, ...body]).toString("base64url");
    const signingInput = `${header}.${payload}`;
    const signature = createHmac("sha256", key.hmacKey).update(signingInput, "latin1").digest(
      "base64url",
    );
    const bytes = Buffer.from(`${signingInput}.${signature}`, "latin1");
    return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
  }

  /**
   * The verified message inside `data`, or undefined after counting the drop (and setting
   * `out.reason`). Never throws.
   */
  open(
    data: Uint8Array,
    limit: number,
    maxMessage: number,
    out?: { reason?: DropReason },
  ): Uint8Array | undefined {
    let result: Uint8Array | DropReason;
    try {
      result = this.#open(data, limit, maxMessage);
    } catch {
      result = "malformed";
    }
    if (typeof result === "string") {
      this.dropped[result]++;
      if (out) out.reason = result;
      return undefined;
    }
    return result;
  }

  #open(data: Uint8Array, limit: number, maxMessage: number): Uint8Array | DropReason {
    if (data.length > limit) return "too_large";
    if (data.length === 0) return "malformed";

    // Shape: HEADER.PAYLOAD.SIGNATURE, base64url only.
    let first = -1;
    let second = -1;
    let dots = 0;
    let alphabet = true;
    for (let i = 0; i < data.length; i++) {
      const b = data[i];
      if (b === DOT) {
        dots++;
        if (dots === 1) first = i;
        else if (dots === 2) second = i;
      } else if (!isBase64url(b)) {
        alphabet = false;
      }
    }
    if (dots === 0 || (dots === 2 && second === data.length - 1 && alphabet)) return "unsigned";
    if (dots !== 2 || !alphabet) return "malformed";
    const headerLen = first;
    const payloadLen = second - first - 1;
    const signatureLen = data.length - second - 1;
    if (headerLen === 0 || payloadLen === 0 || payloadLen % 4 === 1) return "malformed";
    if (signatureLen !== SIGNATURE_CHARS) return "malformed";

    const bytes = Buffer.from(data.buffer, data.byteOffset, data.length);
    const header = bytes.toString("latin1", 0, first);
    const found = this.#keyring.lookup(header);
    if (found === undefined || found.encrypted !== this.#encrypt) return "unknown_key";
    const key = found.key;

    const expected = Buffer.from(
      createHmac("sha256", key.hmacKey).update(bytes.subarray(0, second)).digest("base64url"),
      "latin1",
    );
    if (!timingSafeEqual(expected, bytes.subarray(second + 1))) return "bad_signature";

    const payload = Buffer.from(bytes.toString("latin1", first + 1, second), "base64url");
    const minimum = PREFIX_BYTES + (this.#encrypt ? TAG_BYTES : 0);
    if (payload.length < minimum) return "malformed";
    if (payload.length - minimum > maxMessage) return "too_large";

    const iat = readIat(payload);
    const now = this.#clock.now();
    const expires = iat + this.#windowMs;
    if (iat < now - this.#windowMs || iat > now + this.#windowMs) return "stale";
    this.#replay.prune(now);
    if (expires <= this.#replay.floor) return "stale";
    const id = payload.toString("latin1", 0, PREFIX_BYTES);
    if (this.#replay.has(id)) return "replayed";

    let message: Uint8Array;
    if (this.#encrypt) {
      const opened = decrypt(key, header, payload);
      if (opened === undefined) return "malformed";
      message = opened;
    } else {
      message = new Uint8Array(
        payload.buffer,
        payload.byteOffset + PREFIX_BYTES,
        payload.length - PREFIX_BYTES,
      );
    }
    this.#replay.add(id, expires);
    this.verifiedByKey.set(key.id, (this.verifiedByKey.get(key.id) ?? 0) + 1);
    return message;
  }

  snapshot(): SealStats {
    return {
      dropped: { ...this.dropped },
      verified: { ...this.verified },
      verifiedByKey: Object.fromEntries(this.verifiedByKey),
      sent: { ...this.sent },
      unsendable: this.unsendable,
      replayCache: { size: this.#replay.size, evicted: this.#replay.evicted },
    };
  }
}

/**
 * Accepted (iat, nonce) pairs until they expire, bounded: a min-heap on expiry beside a
 * map. When full, the entry expiring first is evicted early. Whenever an entry is forgotten
 * `floor` rises to its expiry, and tokens expiring no later than `floor` must be refused.
 */
class ReplayCache {
  /** Highest expiry forgotten so far; tokens expiring at or before it are refused. */
  floor = -Infinity;
  evicted = 0;
  #limit: number;
  #expiry = new Map<string, number>();
  #heap: { id: string; expires: number }[] = [];

  constructor(limit: number) {
    this.#limit = limit;
  }

  get size(): number {
    return this.#expiry.size;
  }

  has(id: string): boolean {
    return this.#expiry.has(id);
  }

  /**
   * Forgets entries whose tokens are stale by now anyway. `floor` rises with them, so a
   * clock that steps back cannot make a forgotten token acceptable again.
   */
  prune(now: number): void {
    while (this.#heap.length > 0 && this.#heap[0].expires < now) {
      this.floor = Math.max(this.floor, this.#pop().expires);
    }
  }

  add(id: string, expires: number): void {
    while (this.#expiry.size >= this.#limit) {
      const gone = this.#pop();
      this.floor = Math.max(this.floor, gone.expires);
      this.evicted++;
    }
    this.#expiry.set(id, expires);
    const heap = this.#heap;
    heap.push({ id, expires });
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent].expires <= heap[i].expires) break;
      [heap[parent], heap[i]] = [heap[i], heap[parent]];
      i = parent;
    }
  }

  #pop(): { id: string; expires: number } {
    const heap = this.#heap;
    const top = heap[0];
    const last = heap.pop()!;
    if (heap.length > 0) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let smallest = i;
        if (l < heap.length && heap[l].expires < heap[smallest].expires) smallest = l;
        if (r < heap.length && heap[r].expires < heap[smallest].expires) smallest = r;
        if (smallest === i) break;
        [heap[smallest], heap[i]] = [heap[i], heap[smallest]];
        i = smallest;
      }
    }
    this.#expiry.delete(top.id);
    return top;
  }
}

function encrypt(key: RingKey, header: string, prefix: Uint8Array, message: Uint8Array) {
  const cipher = createCipheriv("aes-256-gcm", key.aesKey, iv(prefix));
  cipher.setAAD(Buffer.from(header, "latin1"));
  return [cipher.update(message), cipher.final(), cipher.getAuthTag()];
}

function decrypt(key: RingKey, header: string, payload: Buffer): Uint8Array | undefined {
  try {
    const decipher = createDecipheriv("aes-256-gcm", key.aesKey, iv(payload), {
      authTagLength: TAG_BYTES,
    });
    decipher.setAAD(Buffer.from(header, "latin1"));
    decipher.setAuthTag(payload.subarray(payload.length - TAG_BYTES));
    const plain = Buffer.concat([
      decipher.update(payload.subarray(PREFIX_BYTES, payload.length - TAG_BYTES)),
      decipher.final(),
    ]);
    return new Uint8Array(plain.buffer, plain.byteOffset, plain.length);
  } catch {
    return undefined;
  }
}

/** The GCM IV: the 8 nonce bytes, then the low 32 bits of `iat`. */
function iv(prefix: Uint8Array): Uint8Array {
  const out = new Uint8Array(12);
  out.set(prefix.subarray(8, 16), 0);
  out.set(prefix.subarray(4, 8), 8);
  return out;
}

function writeIat(buf: Buffer, iat: number): void {
  buf.writeUInt32BE(Math.floor(iat / 2 ** 32), 0);
  buf.writeUInt32BE(iat >>> 0, 4);
}

function readIat(buf: Buffer): number {
  return buf.readUInt32BE(0) * 2 ** 32 + buf.readUInt32BE(4);
}

function isBase64url(b: number): boolean {
  return (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) ||
    b === 0x2d || b === 0x5f;
}

function base64urlLength(bytes: number): number {
  return Math.floor(bytes / 3) * 4 + [0, 2, 3][bytes % 3];
}

function headerLength(shape: SealShape): number {
  return tokenHeader(shape.cluster, "A".repeat(KID_CHARS), shape.encrypt ?? false).length;
}

function positiveInteger(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) {
    throw new JwError("config", `${name} must be a positive integer, got ${value}`);
  }
}
