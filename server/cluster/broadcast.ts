/**
 * The transmit-limited broadcast queue: messages waiting to be piggybacked on outgoing
 * packets. Each is sent at most `retransmitMult * ceil(log10(n + 1))` times for a cluster of
 * n members (enough for an epidemic to reach everyone with high probability), least-sent
 * and then newest first; a newer broadcast about the same node replaces older ones.
 *
 * @module
 */

/** One queued message. */
export interface Broadcast {
  /**
   * The node this message is about. A newer broadcast with the same key invalidates the
   * queued one. Omit for messages that never replace each other (user broadcasts).
   */
  key?: string;
  /** The encoded message. */
  message: Uint8Array;
  /**
   * A destination this broadcast is useless to (e.g. the node an alive message is about);
   * {@link TransmitLimitedQueue.getBroadcasts} skips it for that destination.
   */
  notFor?: string;
  /**
   * Called once when the broadcast leaves the queue: sent its full count, replaced by a
   * newer one, or dropped by {@link TransmitLimitedQueue.reset} / {@link TransmitLimitedQueue.prune}.
   */
  finished?: () => void;
}

interface Entry {
  broadcast: Broadcast;
  transmits: number;
  id: number;
}

/** Options for {@link TransmitLimitedQueue}. */
export interface TransmitLimitedQueueOptions {
  /** Multiplier of the per-broadcast send limit (memberlist's RetransmitMult, default 4). */
  retransmitMult?: number;
  /** The current cluster size, asked whenever the limit is computed. */
  numNodes: () => number;
}

/** `retransmitMult * ceil(log10(n + 1))`: how many times a broadcast is sent in a cluster of n. */
export function retransmitLimit(retransmitMult: number, n: number): number {
  return retransmitMult * Math.ceil(Math.log10(n + 1));
}

/**
 * The queue. Synchronous; not shared between threads. {@link getBroadcasts} is the only
 * call that counts transmissions.
 */
export class TransmitLimitedQueue {
  readonly #mult: number;
  readonly #numNodes: () => number;
  #entries: Entry[] = [];
  #nextId = 0;

  constructor(options: TransmitLimitedQueueOptions) {
    this.#mult = options.retransmitMult ?? 4;
    this.#numNodes = options.numNodes;
  }

  /** Queues a broadcast, first finishing any queued one with the same key. */
  queue(broadcast: Broadcast): void {
    if (broadcast.key !== undefined) {
      const key = broadcast.key;
      const kept: Entry[] = [];
      for (const e of this.#entries) {
        if (e.broadcast.key === key) e.broadcast.finished?.();
        else kept.push(e);
      }
      this.#entries = kept;
    }
    this.#entries.push({ broadcast, transmits: 0, id: this.#nextId++ });
  }

  /**
   * Takes broadcasts for one packet: each costs its length plus `overhead` bytes, and the
   * total stays within `limit`. Least-sent first, newest first among equals; a broadcast
   * too large for the room left is skipped (smaller ones may still fit). Each returned
   * broadcast counts one transmission and leaves the queue at its limit. Broadcasts whose
   * `notFor` equals `to` are left for other destinations.
   */
  getBroadcasts(overhead: number, limit: number, maxCount = Infinity, to?: string): Uint8Array[] {
    if (this.#entries.length === 0) return [];
    const max = retransmitLimit(this.#mult, this.#numNodes());
    this.#entries.sort((a, b) => a.transmits - b.transmits || b.id - a.id);
    const out: Uint8Array[] = [];
    let used = 0;
    const done: Entry[] = [];
    for (const e of this.#entries) {
      if (out.length >= maxCount) break;
      if (to !== undefined && e.broadcast.notFor === to) continue;
      const cost = e.broadcast.message.length + overhead;
      if (used + cost > limit) continue;
      used += cost;
      out.push(e.broadcast.message);
      e.transmits++;
      if (e.transmits >= max) done.push(e);
    }
    if (done.length > 0) {
      const gone = new Set(done);
      this.#entries = this.#entries.filter((e) => !gone.has(e));
      for (const e of done) e.broadcast.finished?.();
    }
    return out;
  }

  /** Number of queued broadcasts. */
  get length(): number {
    return this.#entries.length;
  }

  /** Keeps only the `max` least-sent broadcasts (newest first among equals). */
  prune(max: number): void {
    if (this.#entries.length <= max) return;
    this.#entries.sort((a, b) => a.transmits - b.transmits || b.id - a.id);
    const dropped = this.#entries.splice(max);
    for (const e of dropped) e.broadcast.finished?.();
  }

  /** Drops every broadcast (each is finished). */
  reset(): void {
    const dropped = this.#entries;
    this.#entries = [];
    for (const e of dropped) e.broadcast.finished?.();
  }
}
