/**
 * The in-process reply bus: every reply relayed from an agent is published once and
 * delivered to each subscriber whose filter matches (by agent, tag, envelope id).
 *
 * @module
 */
import type { Logger } from "../../shared/log.ts";
import { silentLogger } from "../../shared/log.ts";
import type { RelayedReply } from "../../shared/protocol/mod.ts";
import { type Channel, createChannel } from "./channel.ts";

/** Which replies a subscriber wants; every given field must match. Empty = everything. */
export interface ReplyFilter {
  /** Only replies from this agent. */
  agent?: string;
  /** Only replies from agents whose current tags have this value. */
  tag?: { name: string; value: string };
  /** Only replies to this envelope id. */
  id?: string;
  /** Only these reply types (output, log, setTag). */
  types?: readonly RelayedReply["type"][];
}

/**
 * Where a relayed reply keeps its JSON text when the server already has it (the agent's
 * frame with `agent` added), so writers to operators need not serialise it again. A symbol:
 * never part of the JSON itself.
 */
export const RELAYED_JSON: unique symbol = Symbol("jw.relayedJson");

/** A relayed reply that may carry its own JSON text. */
export type RelayedWithJson = RelayedReply & { [RELAYED_JSON]?: string };

/** The JSON text of a relayed reply, reusing the agent's frame text when it was kept. */
export function relayedJson(reply: RelayedReply): string {
  return (reply as RelayedWithJson)[RELAYED_JSON] ?? JSON.stringify(reply);
}

/**
 * `frameText` (a JSON object the agent sent, already checked) with `"agent": id` added as
 * its last member: the relayed form, without a parse-and-stringify round trip.
 */
export function withAgent(frameText: string, agentId: string): string {
  const end = frameText.lastIndexOf("}");
  return `${frameText.slice(0, end)},"agent":${JSON.stringify(agentId)}}`;
}

/** Receives matching replies. Must not block; exceptions are logged and ignored. */
export type ReplySink = (reply: RelayedReply) => void;

/** Default queue bound of {@link ReplyBus.stream}, in replies. */
export const DEFAULT_STREAM_QUEUE = 10_000;

/** Default queue bound of {@link ReplyBus.stream}, in bytes (estimated by {@link replyWeight}). */
export const DEFAULT_STREAM_BYTES = 32 * 1024 * 1024;

/**
 * A cheap estimate of a reply's size in memory: a fixed overhead plus its text, message
 * and structured data. Used to bound what slow readers may hold.
 */
export function replyWeight(reply: RelayedReply): number {
  // The kept frame text is the reply's size already (held twice: text and decoded object).
  const kept = (reply as RelayedWithJson)[RELAYED_JSON];
  if (kept !== undefined) return 256 + kept.length * 4;
  let n = 256;
  if (reply.type === "output") {
    if (reply.text !== undefined) n += reply.text.length * 2;
    if (reply.data !== undefined) n += JSON.stringify(reply.data).length * 2;
  } else if (reply.type === "log") {
    n += reply.message.length * 2;
    if (reply.fields !== undefined) n += JSON.stringify(reply.fields).length * 2;
  } else n += JSON.stringify(reply.tags).length * 2;
  if (reply.meta !== undefined) n += 64;
  return n;
}

/**
 * Fans replies out to subscribers. Synchronous and non-blocking: {@link ReplyBus.publish}
 * calls each matching sink once, in turn; a sink that throws does not affect others.
 * Subscribers filtered by envelope id are indexed, so runs cost nothing to other replies.
 */
export interface ReplyBus {
  /**
   * Delivers `reply` to matching subscribers. `tags` are the sending agent's current tags,
   * used by tag filters.
   */
  publish(reply: RelayedReply, tags: Readonly<Record<string, string>>): void;
  /** Calls `sink` for each matching reply until the returned function is called. */
  subscribe(filter: ReplyFilter, sink: ReplySink): () => void;
  /**
   * A bounded stream of matching replies (oldest dropped when the reader falls behind by
   * `maxQueue` replies, default {@link DEFAULT_STREAM_QUEUE}, or `maxBytes`, default
   * {@link DEFAULT_STREAM_BYTES}). It unsubscribes when the reader
   * stops or the channel is closed, and ends when the bus closes.
   */
  stream(
    filter: ReplyFilter,
    options?: { maxQueue?: number; maxBytes?: number; closeWhenFull?: boolean },
  ): Channel<RelayedReply>;
  /** Number of subscribers. */
  readonly subscribers: number;
  /** Ends every stream and drops every subscriber; later subscriptions end at once. */
  close(): void;
}

interface Subscriber {
  filter: ReplyFilter;
  sink: ReplySink;
}

function matches(filter: ReplyFilter, reply: RelayedReply, tags: Readonly<Record<string, string>>) {
  if (filter.agent !== undefined && filter.agent !== reply.agent) return false;
  if (filter.id !== undefined && filter.id !== reply.id) return false;
  if (filter.types !== undefined && !filter.types.includes(reply.type)) return false;
  if (filter.tag) {
    const { name, value } = filter.tag;
    if (!Object.hasOwn(tags, name) || tags[name] !== value) return false;
  }
  return true;
}

class ReplyBusImpl implements ReplyBus {
  readonly #logger: Logger;
  readonly #byId = new Map<string, Set<Subscriber>>();
  readonly #others = new Set<Subscriber>();
  readonly #streams = new Set<Channel<RelayedReply>>();
  #closed = false;

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  get subscribers(): number {
    let n = this.#others.size;
    for (const set of this.#byId.values()) n += set.size;
    return n;
  }

  publish(reply: RelayedReply, tags: Readonly<Record<string, string>>): void {
    const byId = this.#byId.get(reply.id);
    if (byId) { for (const sub of byId) this.#deliver(sub, reply, tags); }
    for (const sub of this.#others) this.#deliver(sub, reply, tags);
  }

  subscribe(filter: ReplyFilter, sink: ReplySink): () => void {
    if (this.#closed) return () => {};
    const sub: Subscriber = { filter: { ...filter }, sink };
    const id = filter.id;
    if (id === undefined) {
      this.#others.add(sub);
      return () => this.#others.delete(sub);
    }
    let set = this.#byId.get(id);
    if (!set) this.#byId.set(id, set = new Set());
    set.add(sub);
    return () => {
      const current = this.#byId.get(id);
      if (!current?.delete(sub)) return;
      if (current.size === 0) this.#byId.delete(id);
    };
  }

  stream(
    filter: ReplyFilter,
    options: { maxQueue?: number; maxBytes?: number; closeWhenFull?: boolean } = {},
  ): Channel<RelayedReply> {
    let unsubscribe = () => {};
    const channel: Channel<RelayedReply> = createChannel<RelayedReply>({
      maxQueue: options.maxQueue ?? DEFAULT_STREAM_QUEUE,
      maxBytes: options.maxBytes ?? DEFAULT_STREAM_BYTES,
      weigh: replyWeight,
      // A reader that does not keep up is cut off (it reconnects) rather than let the queue
      // decide what it misses.
      onDrop: options.closeWhenFull ? () => channel.close() : undefined,
      onClose: () => {
        unsubscribe();
        this.#streams.delete(channel);
      },
    });
    if (this.#closed) {
      channel.close();
      return channel;
    }
    this.#streams.add(channel);
    unsubscribe = this.subscribe(filter, (reply) => channel.push(reply));
    return channel;
  }

  close(): void {
    this.#closed = true;
    for (const channel of [...this.#streams]) channel.close();
    this.#byId.clear();
    this.#others.clear();
  }

  #deliver(sub: Subscriber, reply: RelayedReply, tags: Readonly<Record<string, string>>): void {
    if (!matches(sub.filter, reply, tags)) return;
    try {
      sub.sink(reply);
    } catch (err) {
      this.#logger.error("reply subscriber failed", { error: String(err) });
    }
  }
}

/** Creates an empty {@link ReplyBus}. */
export function createReplyBus(options: { logger?: Logger } = {}): ReplyBus {
  return new ReplyBusImpl(options.logger ?? silentLogger);
}
