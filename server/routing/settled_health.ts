/**
 * Hysteresis for the health score agent placement uses. Lifeguard's score moves by one on
 * each missed or answered probe; moving agents on every step would bounce them between
 * servers. A settled score follows the raw one only once a change has lasted: a worse score
 * after `riseMs`, a better one after `fallMs` (longer, so a server that was sick takes its
 * agents back slowly).
 *
 * @module
 */

/** How long a change of the raw score must last before it counts. */
export interface HealthHold {
  /** For a worse (higher) score, ms. */
  riseMs: number;
  /** For a better (lower) score, ms. */
  fallMs: number;
}

/**
 * Returns a function fed the raw score and the time at every check; it returns the settled
 * score. Starts settled at `initial`. While the raw score stays on one side of the settled
 * one, the level it held throughout (the smallest rise, or the smallest fall) becomes the
 * settled score once it has lasted the hold time.
 */
export function createSettledHealth(
  hold: HealthHold,
  initial = 0,
): (raw: number, now: number) => number {
  let settled = initial;
  /** The level the raw score has held since `since`, on one side of `settled`. */
  let pending: { level: number; since: number } | undefined;
  return (raw, now) => {
    if (raw === settled) {
      pending = undefined;
      return settled;
    }
    const up = raw > settled;
    if (!pending || (pending.level > settled) !== up) {
      pending = { level: raw, since: now };
    } else {
      pending.level = up ? Math.min(pending.level, raw) : Math.max(pending.level, raw);
    }
    if (now - pending.since >= (up ? hold.riseMs : hold.fallMs)) {
      settled = pending.level;
      // The rest of the change (if any) starts its own hold now.
      pending = raw === settled ? undefined : { level: raw, since: now };
    }
    return settled;
  };
}
