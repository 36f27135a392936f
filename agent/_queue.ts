/**
 * An unbounded push queue read as an async iterable, by one consumer at a time.
 *
 * @module
 */

/**
 * Values pushed before or during iteration are yielded in order; after {@link Queue.end}
 * the iteration finishes once the buffered values are drained. Pushing after `end` is
 * ignored. One consumer: a second concurrent iterator would split the values.
 */
export class Queue<T> implements AsyncIterable<T> {
  #items: T[] = [];
  #ended = false;
  #wake: (() => void) | undefined;

  /** Adds a value; ignored after {@link end}. */
  push(value: T): void {
    if (this.#ended) return;
    this.#items.push(value);
    this.#signal();
  }

  /** Ends the queue; buffered values are still yielded. Idempotent. */
  end(): void {
    this.#ended = true;
    this.#signal();
  }

  /** True after {@link end}. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Number of buffered values. */
  get size(): number {
    return this.#items.length;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      if (this.#items.length > 0) {
        yield this.#items.shift()!;
        continue;
      }
      if (this.#ended) return;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  #signal(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}
