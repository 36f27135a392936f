/**
 * A single-consumer async queue: producers {@link Channel.push} synchronously and never
 * wait; one consumer reads with `for await`. Optionally bounded, dropping the oldest item.
 *
 * @module
 */

/** Options for {@link createChannel}. */
export interface ChannelOptions<T = unknown> {
  /**
   * Most items kept unread. When full, a push drops the oldest unread item and counts it in
   * {@link Channel.dropped}. Default `Infinity` (never drops).
   */
  maxQueue?: number;
  /**
   * Most bytes kept unread, as measured by `weigh`; beyond it the oldest unread items are
   * dropped (and counted) like for `maxQueue`. Default `Infinity`.
   */
  maxBytes?: number;
  /** Size of an item in bytes, for `maxBytes`. Called once per queued item. */
  weigh?: (item: T) => number;
  /** Called once when the channel closes, from whichever side closed it. */
  onClose?: () => void;
  /** Called after an item was dropped because the channel was full. */
  onDrop?: () => void;
}

/**
 * An async iterable queue. Pushing never blocks. Closing lets the consumer drain what is
 * queued and then ends its iteration; the consumer leaving (`break`, `return()`) closes the
 * channel and discards the rest. Only one consumer may read at a time.
 */
export interface Channel<T> extends AsyncIterableIterator<T> {
  /** Queues `item`; returns false (and drops it) when the channel is closed. */
  push(item: T): boolean;
  /** Ends the channel after the queued items. Idempotent. */
  close(): void;
  /** True once closed. */
  readonly closed: boolean;
  /** Items dropped because the queue was full. */
  readonly dropped: number;
  /** Items queued and not yet read. */
  readonly size: number;
  /** The reader is done: closes the channel and discards what is queued. */
  return(): Promise<IteratorResult<T>>;
}

class ChannelImpl<T> implements Channel<T> {
  readonly #max: number;
  readonly #maxBytes: number;
  readonly #weigh?: (item: T) => number;
  readonly #onClose?: () => void;
  readonly #onDrop?: () => void;
  #items: T[] = [];
  /** Weights of queued items, parallel to #items (only when weighing). */
  #weights: number[] = [];
  #bytes = 0;
  #head = 0;
  #closed = false;
  #dropped = 0;
  #waiter?: (result: IteratorResult<T>) => void;

  constructor(options: ChannelOptions<T>) {
    this.#max = Math.max(1, options.maxQueue ?? Infinity);
    this.#maxBytes = options.maxBytes ?? Infinity;
    this.#weigh = options.maxBytes === undefined ? undefined : options.weigh;
    this.#onClose = options.onClose;
    this.#onDrop = options.onDrop;
  }

  get closed(): boolean {
    return this.#closed;
  }

  get dropped(): number {
    return this.#dropped;
  }

  get size(): number {
    return this.#items.length - this.#head;
  }

  push(item: T): boolean {
    if (this.#closed) return false;
    const waiter = this.#waiter;
    if (waiter) {
      this.#waiter = undefined;
      waiter({ value: item, done: false });
      return true;
    }
    if (this.size >= this.#max) this.#dropOldest();
    this.#items.push(item);
    if (this.#weigh) {
      const weight = this.#weigh(item);
      this.#weights.push(weight);
      this.#bytes += weight;
      while (this.#bytes > this.#maxBytes && this.size > 1) this.#dropOldest();
    }
    return true;
  }

  #dropOldest(): void {
    if (this.#weigh) this.#bytes -= this.#weights[this.#head];
    this.#items[this.#head] = undefined as T;
    this.#head++;
    this.#dropped++;
    this.#onDrop?.();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.({ value: undefined, done: true });
    this.#onClose?.();
  }

  next(): Promise<IteratorResult<T>> {
    if (this.size > 0) {
      const value = this.#items[this.#head];
      if (this.#weigh) this.#bytes -= this.#weights[this.#head];
      this.#items[this.#head++] = undefined as T;
      if (this.#head === this.#items.length) {
        this.#items = [];
        this.#weights = [];
        this.#head = 0;
      } else if (this.#head >= 1024 && this.#head * 2 >= this.#items.length) {
        this.#items = this.#items.slice(this.#head);
        this.#weights = this.#weights.slice(this.#head);
        this.#head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.#closed) return Promise.resolve({ value: undefined, done: true });
    if (this.#waiter) return Promise.reject(new Error("Channel has a pending read already"));
    return new Promise((resolve) => (this.#waiter = resolve));
  }

  return(): Promise<IteratorResult<T>> {
    this.close();
    this.#items = [];
    this.#weights = [];
    this.#bytes = 0;
    this.#head = 0;
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

/** Creates an open, empty {@link Channel}. */
export function createChannel<T>(options: ChannelOptions<T> = {}): Channel<T> {
  return new ChannelImpl<T>(options);
}
