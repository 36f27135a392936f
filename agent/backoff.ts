/**
 * Reconnect delays: exponential backoff with full jitter.
 *
 * @module
 */
import type { Random } from "../shared/random.ts";

/** Backoff bounds in ms. */
export interface BackoffBounds {
  /** Cap of the first delay. */
  min: number;
  /** Largest cap. */
  max: number;
}

/**
 * The delay before retry number `attempt` (0-based): `random.float() * min(max, min * 2^attempt)`,
 * so always in [0, min(max, min * 2^attempt)). A `min` below 1 ms counts as 1 ms, so a zero
 * `min` still backs off instead of retrying in a hot loop. Never NaN or infinite for finite
 * bounds.
 */
export function backoffDelay(attempt: number, bounds: BackoffBounds, random: Random): number {
  const exponent = Math.min(Math.max(0, Math.floor(attempt)), 52);
  const cap = Math.min(bounds.max, Math.max(1, bounds.min) * 2 ** exponent);
  return random.float() * Math.max(0, cap);
}
