/**
 * Order for overlapping sends. A backend that lets a second batch go out while the first
 * waits for its confirms (`Backend.window` > 1) must still put messages on the wire in queue
 * order, and must not publish a batch at all once the batch it follows failed: that one is
 * sent again later and must not be overtaken.
 *
 * Each `send` takes a turn and publishes only once the turn before it has handed all of its
 * messages over. Turns belong to a run of sends: a send that follows another batch
 * (`after` > 0) is in the same run as it; a send that starts from the oldest queued message
 * (`after` = 0, as the pipeline does after a failure) starts a new run. Once a send of a run
 * fails, the later sends of that run do not publish.
 *
 * @module
 */

/** One send's place in line. */
export class Turn {
  readonly #order: SendOrder;
  readonly #run: number;
  #previous: Turn | null;
  readonly #published: Promise<void>;
  #release!: () => void;
  #settled = false;

  constructor(order: SendOrder, run: number, previous: Turn | null) {
    this.#order = order;
    this.#run = run;
    this.#previous = previous;
    this.#published = new Promise<void>((resolve) => this.#release = resolve);
  }

  /** True once the send is over, either way. */
  get settled(): boolean {
    return this.#settled;
  }

  /**
   * Waits until the send before this one has published everything it had; false when a
   * send of this run failed (then this one must not publish).
   */
  async ready(): Promise<boolean> {
    const previous = this.#previous;
    if (previous) {
      await previous.#published;
      this.#previous = null;
    }
    return this.#order.failedRun !== this.#run;
  }

  /** This send has put all of its messages on the wire: the next one may start. */
  published(): void {
    this.#release();
  }

  /** The send is over; `ok` false when it failed. Releases the next one in any case. */
  settle(ok: boolean): void {
    if (!ok) this.#order.failedRun = this.#run;
    this.#settled = true;
    this.#release();
  }
}

/** Hands out turns in call order. */
export class SendOrder {
  #run = 0;
  #last: Turn | null = null;
  /** The run a send failed in (its later sends do not publish). */
  failedRun = -1;

  /**
   * The turn of a send starting now. `after` is the queue position of the last message of
   * the batch this one follows, or 0 when it starts from the oldest queued message.
   */
  next(after: number): Turn {
    if (after === 0) this.#run++;
    const last = this.#last;
    return this.#last = new Turn(this, this.#run, last && !last.settled ? last : null);
  }
}
