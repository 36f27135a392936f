/**
 * The gossip message set and its msgpack codec. Every message is a msgpack array whose
 * first element is a small integer tag; decoding is strict: anything that is not exactly
 * one well-formed message (wrong types, extra or missing fields, out-of-range numbers,
 * trailing bytes, lying lengths) throws JwError `invalid_message` and never anything else.
 *
 * Packets carry one message or a `compound` of several (each part encoded on its own, so
 * queued broadcasts are encoded once and reused). Streams carry `push-pull` state.
 *
 * @module
 */
import { decode, encode } from "@msgpack/msgpack";
import { JwError } from "../../shared/errors.ts";

/** Largest node metadata (bytes), e.g. the server's HTTP URL. */
export const META_LIMIT = 512;
/** Longest node name (UTF-16 code units). */
export const NAME_LIMIT = 128;
/** Longest "host:port" address. */
export const ADDRESS_LIMIT = 256;
/** Length of a user message id. */
export const USER_ID_LENGTH = 8;
/** Largest sequence number / incarnation (unsigned 32-bit). */
export const UINT32_MAX = 0xffff_ffff;

/** Liveness of a member as gossiped. `left` is a graceful leave, `dead` a failure. */
export type MemberState = "alive" | "suspect" | "dead" | "left";

/** A direct probe of `node` (the receiver ignores pings meant for another name). */
export interface PingMessage {
  type: "ping";
  seq: number;
  /** The name of the node the sender means to probe. */
  node: string;
}

/** Asks the receiver to ping `target` at `address` and relay the ack (or a nack). */
export interface IndirectPingMessage {
  type: "indirect-ping";
  seq: number;
  target: string;
  address: string;
  /** Send a nack when the target does not answer within the probe timeout. */
  nack: boolean;
}

/** Answers a ping (directly, or relayed by an indirect prober). */
export interface AckMessage {
  type: "ack";
  seq: number;
  payload?: Uint8Array;
}

/** Tells an indirect-ping requester that the target did not answer us in time. */
export interface NackMessage {
  type: "nack";
  seq: number;
}

/** `from` suspects `node` at `incarnation`. */
export interface SuspectMessage {
  type: "suspect";
  incarnation: number;
  node: string;
  from: string;
}

/** `node` is alive at `incarnation`, reachable at `address`, with `meta`. */
export interface AliveMessage {
  type: "alive";
  incarnation: number;
  node: string;
  address: string;
  meta: Uint8Array;
}

/** `from` declares `node` dead at `incarnation`; `from === node` is a graceful leave. */
export interface DeadMessage {
  type: "dead";
  incarnation: number;
  node: string;
  from: string;
}

/**
 * Opaque bytes broadcast for the layer above. `id` (random, {@link USER_ID_LENGTH} bytes)
 * lets every member deliver and re-gossip a message once.
 */
export interface UserMessage {
  type: "user";
  id: Uint8Array;
  data: Uint8Array;
}

/** Every message a packet carries (alone, or as a part of a compound packet). */
export type SingleMessage =
  | PingMessage
  | IndirectPingMessage
  | AckMessage
  | NackMessage
  | SuspectMessage
  | AliveMessage
  | DeadMessage
  | UserMessage;

/** One member as carried by push-pull. */
export interface PushMember {
  name: string;
  address: string;
  meta: Uint8Array;
  incarnation: number;
  state: MemberState;
}

/** A full state exchange over a stream. */
export interface PushPullMessage {
  type: "push-pull";
  /** True when the sender is joining (the first exchange of a new node). */
  join: boolean;
  members: PushMember[];
  /** Opaque state of the layer above. */
  userState: Uint8Array;
}

const TAG = {
  ping: 0,
  "indirect-ping": 1,
  ack: 2,
  nack: 3,
  suspect: 4,
  alive: 5,
  dead: 6,
  user: 7,
  compound: 8,
  "push-pull": 9,
} as const;

const STATES: readonly MemberState[] = ["alive", "suspect", "dead", "left"];

/** Bytes a compound packet adds before its parts: array headers and the tag (upper bound). */
export const COMPOUND_HEADER_OVERHEAD = 5;
/** Bytes a compound packet adds per part: the bin header (upper bound for parts < 64 KiB). */
export const COMPOUND_PART_OVERHEAD = 3;
/** Most parts in one compound packet. */
export const COMPOUND_MAX_PARTS = 255;

function invalid(message: string, cause?: unknown): JwError {
  return new JwError("invalid_message", `invalid gossip message: ${message}`, { cause });
}

/** Encodes one message (not compound; see {@link encodeCompound}). */
export function encodeMessage(message: SingleMessage): Uint8Array {
  switch (message.type) {
    case "ping":
      return encode([TAG.ping, message.seq, message.node]);
    case "indirect-ping":
      return encode([
        TAG["indirect-ping"],
        message.seq,
        message.target,
        message.address,
        message.nack,
      ]);
    case "ack":
      return encode(
        message.payload === undefined
          ? [TAG.ack, message.seq]
          : [TAG.ack, message.seq, message.payload],
      );
    case "nack":
      return encode([TAG.nack, message.seq]);
    case "suspect":
      return encode([TAG.suspect, message.incarnation, message.node, message.from]);
    case "alive":
      return encode([
        TAG.alive,
        message.incarnation,
        message.node,
        message.address,
        message.meta,
      ]);
    case "dead":
      return encode([TAG.dead, message.incarnation, message.node, message.from]);
    case "user":
      return encode([TAG.user, message.id, message.data]);
  }
}

/**
 * Wraps already-encoded messages into one compound packet. The result is at most
 * {@link COMPOUND_HEADER_OVERHEAD} + the sum of (part length + {@link COMPOUND_PART_OVERHEAD}).
 */
export function encodeCompound(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 0 || parts.length > COMPOUND_MAX_PARTS) {
    throw new JwError("internal", `a compound packet needs 1..${COMPOUND_MAX_PARTS} parts`);
  }
  return encode([TAG.compound, parts]);
}

/** Encodes a push-pull state message (for a stream). */
export function encodePushPull(message: PushPullMessage): Uint8Array {
  return encode([
    TAG["push-pull"],
    message.join,
    message.members.map((m) => [
      m.name,
      m.address,
      m.meta,
      m.incarnation,
      STATES.indexOf(m.state),
    ]),
    message.userState,
  ]);
}

// Generous caps handed to the msgpack decoder so a lying length fails fast instead of
// allocating: no string or bin in our messages is near these.
const DECODE_LIMITS = {
  maxStrLength: 4096,
  maxBinLength: 16 * 1024 * 1024,
  maxArrayLength: 1_000_000,
  maxMapLength: 0,
  maxExtLength: 0,
};

function raw(data: Uint8Array): unknown {
  try {
    return decode(data, DECODE_LIMITS);
  } catch (err) {
    throw invalid(err instanceof Error ? err.message : String(err), err);
  }
}

function tuple(value: unknown, what: string): unknown[] {
  if (!Array.isArray(value)) throw invalid(`${what} is not an array`);
  return value;
}

function arity(fields: unknown[], min: number, max: number, what: string): void {
  if (fields.length < min || fields.length > max) {
    throw invalid(`${what} has ${fields.length} fields`);
  }
}

function uint32(value: unknown, what: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > UINT32_MAX) {
    throw invalid(`${what} is not an unsigned 32-bit integer`);
  }
  return value;
}

function nodeName(value: unknown, what: string): string {
  if (typeof value !== "string" || value.length === 0 || value.length > NAME_LIMIT) {
    throw invalid(`${what} is not a node name (1..${NAME_LIMIT} characters)`);
  }
  return value;
}

function address(value: unknown, what: string): string {
  if (typeof value !== "string" || value.length === 0 || value.length > ADDRESS_LIMIT) {
    throw invalid(`${what} is not an address`);
  }
  return value;
}

function bytes(value: unknown, what: string, limit = Infinity): Uint8Array {
  if (!(value instanceof Uint8Array)) throw invalid(`${what} is not bytes`);
  if (value.length > limit) throw invalid(`${what} is larger than ${limit} bytes`);
  // Decoded bins are views into the packet; copy so callers may keep them.
  return value.slice();
}

function bool(value: unknown, what: string): boolean {
  if (typeof value !== "boolean") throw invalid(`${what} is not a boolean`);
  return value;
}

function tagOf(fields: unknown[]): number {
  if (fields.length === 0) throw invalid("empty array");
  const tag = fields[0];
  if (typeof tag !== "number" || !Number.isInteger(tag)) throw invalid("tag is not an integer");
  return tag;
}

function single(fields: unknown[]): SingleMessage {
  const tag = tagOf(fields);
  switch (tag) {
    case TAG.ping:
      arity(fields, 3, 3, "ping");
      return {
        type: "ping",
        seq: uint32(fields[1], "ping.seq"),
        node: nodeName(fields[2], "ping.node"),
      };
    case TAG["indirect-ping"]:
      arity(fields, 5, 5, "indirect-ping");
      return {
        type: "indirect-ping",
        seq: uint32(fields[1], "indirect-ping.seq"),
        target: nodeName(fields[2], "indirect-ping.target"),
        address: address(fields[3], "indirect-ping.address"),
        nack: bool(fields[4], "indirect-ping.nack"),
      };
    case TAG.ack: {
      arity(fields, 2, 3, "ack");
      const seq = uint32(fields[1], "ack.seq");
      return fields.length === 3
        ? { type: "ack", seq, payload: bytes(fields[2], "ack.payload") }
        : { type: "ack", seq };
    }
    case TAG.nack:
      arity(fields, 2, 2, "nack");
      return { type: "nack", seq: uint32(fields[1], "nack.seq") };
    case TAG.suspect:
    case TAG.dead: {
      const what = tag === TAG.suspect ? "suspect" : "dead";
      arity(fields, 4, 4, what);
      return {
        type: what,
        incarnation: uint32(fields[1], `${what}.incarnation`),
        node: nodeName(fields[2], `${what}.node`),
        from: nodeName(fields[3], `${what}.from`),
      };
    }
    case TAG.alive:
      arity(fields, 5, 5, "alive");
      return {
        type: "alive",
        incarnation: uint32(fields[1], "alive.incarnation"),
        node: nodeName(fields[2], "alive.node"),
        address: address(fields[3], "alive.address"),
        meta: bytes(fields[4], "alive.meta", META_LIMIT),
      };
    case TAG.user: {
      arity(fields, 3, 3, "user");
      const id = bytes(fields[1], "user.id", USER_ID_LENGTH);
      if (id.length !== USER_ID_LENGTH) throw invalid(`user.id is not ${USER_ID_LENGTH} bytes`);
      return { type: "user", id, data: bytes(fields[2], "user.data") };
    }
    default:
      throw invalid(`unknown tag ${tag}`);
  }
}

/** Decodes one non-compound message. @throws JwError `invalid_message` */
export function decodeMessage(data: Uint8Array): SingleMessage {
  return single(tuple(raw(data), "message"));
}

/**
 * Decodes a packet into its messages: one for a plain message, each part of a compound.
 * All or nothing: one bad part rejects the packet.
 * @throws JwError `invalid_message`
 */
export function decodePacket(data: Uint8Array): SingleMessage[] {
  const fields = tuple(raw(data), "packet");
  if (tagOf(fields) !== TAG.compound) return [single(fields)];
  arity(fields, 2, 2, "compound");
  const parts = tuple(fields[1], "compound parts");
  if (parts.length === 0 || parts.length > COMPOUND_MAX_PARTS) {
    throw invalid(`compound has ${parts.length} parts`);
  }
  return parts.map((part) => {
    if (!(part instanceof Uint8Array)) throw invalid("compound part is not bytes");
    return decodeMessage(part);
  });
}

/** Decodes a push-pull state message. @throws JwError `invalid_message` */
export function decodePushPull(data: Uint8Array): PushPullMessage {
  const fields = tuple(raw(data), "push-pull");
  if (tagOf(fields) !== TAG["push-pull"]) throw invalid("not a push-pull message");
  arity(fields, 4, 4, "push-pull");
  const join = bool(fields[1], "push-pull.join");
  const members = tuple(fields[2], "push-pull.members").map((m, i) => {
    const f = tuple(m, `push-pull.members[${i}]`);
    arity(f, 5, 5, `push-pull.members[${i}]`);
    const state = f[4];
    if (typeof state !== "number" || STATES[state] === undefined) {
      throw invalid(`push-pull.members[${i}].state is not a member state`);
    }
    return {
      name: nodeName(f[0], `push-pull.members[${i}].name`),
      address: address(f[1], `push-pull.members[${i}].address`),
      meta: bytes(f[2], `push-pull.members[${i}].meta`, META_LIMIT),
      incarnation: uint32(f[3], `push-pull.members[${i}].incarnation`),
      state: STATES[state],
    };
  });
  return { type: "push-pull", join, members, userState: bytes(fields[3], "push-pull.userState") };
}
