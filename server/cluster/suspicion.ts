/**
 * The Lifeguard suspicion timer. A suspicion starts at its longest timeout and shrinks
 * toward the shortest as independent members corroborate it, so a truly failed node is
 * declared dead quickly while a lone (perhaps slow) accuser has to wait the longest.
 *
 * @module
 */
import type { Clock, TimerId } from "../../shared/clock.ts";

/** Options for {@link Suspicion}. */
export interface SuspicionOptions {
  /** Time source and timers. */
  clock: Clock;
  /** The member that started the suspicion; its own later messages do not count. */
  from: string;
  /**
   * Confirmations expected before the timeout reaches `minMs` (memberlist uses
   * suspicionMult - 2, or 0 in a cluster too small to provide them). With k < 1 the
   * timer starts at `minMs`.
   */
  k: number;
  /** The shortest timeout (ms), reached after `k` confirmations. */
  minMs: number;
  /** The longest timeout (ms), used with no confirmations. */
  maxMs: number;
  /** Called once when the timer fires, with the number of confirmations seen. */
  onTimeout: (confirmations: number) => void;
}

/**
 * The timeout after `c` of `k` expected confirmations:
 * `max - (max - min) * log(c + 1) / log(k + 1)`, never below `min` (whole milliseconds).
 */
export function suspicionTimeout(c: number, k: number, minMs: number, maxMs: number): number {
  if (k < 1) return minMs;
  const frac = Math.log(c + 1) / Math.log(k + 1);
  return Math.max(minMs, Math.floor(maxMs - frac * (maxMs - minMs)));
}

/**
 * One running suspicion. It fires `onTimeout` at most once, on the Clock; confirmations
 * re-arm the timer for the shorter remaining time (at once when it is already past).
 * Single-threaded: call from the event loop only.
 */
export class Suspicion {
  readonly #clock: Clock;
  readonly #k: number;
  readonly #minMs: number;
  readonly #maxMs: number;
  readonly #onTimeout: (confirmations: number) => void;
  readonly #start: number;
  readonly #seen = new Set<string>();
  #confirmations = 0;
  #timer: TimerId | undefined;
  #done = false;

  constructor(options: SuspicionOptions) {
    this.#clock = options.clock;
    this.#k = Math.max(0, Math.floor(options.k));
    this.#minMs = options.minMs;
    this.#maxMs = Math.max(options.minMs, options.maxMs);
    this.#onTimeout = options.onTimeout;
    this.#seen.add(options.from);
    this.#start = this.#clock.now();
    this.#arm(suspicionTimeout(0, this.#k, this.#minMs, this.#maxMs));
  }

  /** Independent confirmations counted so far (the starter excluded). */
  get confirmations(): number {
    return this.#confirmations;
  }

  /** True once the timer fired or was cancelled. */
  get done(): boolean {
    return this.#done;
  }

  /** Milliseconds from the start until the timer fires, as currently armed. */
  get timeoutMs(): number {
    return suspicionTimeout(this.#confirmations, this.#k, this.#minMs, this.#maxMs);
  }

  /**
   * Counts a confirmation from `from`. Returns true when it was new (a member not heard
   * from before, while fewer than k were counted), which is when the caller should
   * re-gossip the suspicion; false for repeats, surplus or after the timer fired.
   */
  confirm(from: string): boolean {
    if (this.#done || this.#confirmations >= this.#k || this.#seen.has(from)) return false;
    this.#seen.add(from);
    this.#confirmations++;
    const elapsed = this.#clock.now() - this.#start;
    this.#arm(this.timeoutMs - elapsed);
    return true;
  }

  /** Stops the timer without firing; idempotent. */
  cancel(): void {
    this.#done = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #arm(ms: number): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = this.#clock.setTimeout(() => this.#fire(), Math.max(0, ms));
  }

  #fire(): void {
    if (this.#done) return;
    this.#done = true;
    this.#timer = undefined;
    this.#onTimeout(this.#confirmations);
  }
}
