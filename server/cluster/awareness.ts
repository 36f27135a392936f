/**
 * Lifeguard local health awareness: a small integer that rises when this node has signs of
 * being the slow one (probes it sent went unanswered with no nacks from helpers, it had to
 * refute a suspicion of itself) and falls with every successful probe. Timeouts are scaled
 * by it, so a struggling node waits longer before accusing others.
 *
 * @module
 */
import { JwError } from "../../shared/errors.ts";

/** Default bound: scores run 0..7, stretching timeouts up to 8 times. */
export const DEFAULT_AWARENESS_MAX = 8;

/**
 * The local health score, 0 (healthy) to `max - 1`. Not shared between threads; every call
 * is synchronous.
 */
export class Awareness {
  readonly #max: number;
  #score = 0;

  /**
   * @param max the exclusive upper bound of the score, at least 1 (default
   *   {@link DEFAULT_AWARENESS_MAX}).
   */
  constructor(max: number = DEFAULT_AWARENESS_MAX) {
    if (!Number.isInteger(max) || max < 1) {
      throw new JwError("config", `awareness max must be an integer >= 1, got ${max}`);
    }
    this.#max = max;
  }

  /** Adds `delta` (may be negative) and clamps the score to 0..max-1. */
  apply(delta: number): void {
    this.#score = Math.min(this.#max - 1, Math.max(0, this.#score + delta));
  }

  /** The current score: 0 is healthy, higher is worse. */
  score(): number {
    return this.#score;
  }

  /** `durationMs * (score + 1)`: a timeout stretched by the current score. */
  scale(durationMs: number): number {
    return durationMs * (this.#score + 1);
  }
}
