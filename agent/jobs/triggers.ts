/**
 * Triggers: checks a job's schedule and computes when a time trigger is due. `interval`
 * runs every `every` (at least 1 s) on a fixed grid starting at arming time; `cron` follows
 * a 5- or 6-field expression (croner) in a time zone. Nothing here keeps timers: the
 * scheduler asks for due times and sets its own timers on the Clock.
 *
 * @module
 */
import { Cron } from "croner";
import { JwError } from "../../shared/errors.ts";
import type { Schedule } from "../../shared/protocol/mod.ts";
import { parseDuration } from "../../shared/units.ts";

/** Shortest interval. */
export const MIN_INTERVAL_MS = 1000;

/** The event triggers, fired by the agent's life cycle. */
export type EventTrigger = "onStart" | "onConnect" | "onDisconnect" | "onStop";

/** A time trigger: yields due times. */
export interface TimeTrigger {
  /** The first due time when armed at `now`, or `null` if it never fires. */
  first(now: number): number | null;
  /**
   * The due time after the one at `due`, fired at `now` (≥ `due`, later if the timer ran
   * late): strictly after both, skipping any slots missed in between. `null` if none.
   */
  after(due: number, now: number): number | null;
}

/** A checked schedule. */
export type CompiledTrigger =
  | { kind: "now" }
  | { kind: "event"; event: EventTrigger }
  | { kind: "time"; time: TimeTrigger };

/**
 * Checks `schedule` and prepares it. `now` is only used to make sure a cron expression
 * fires at all.
 * @throws JwError `invalid_args` for an interval that is not a duration or is under 1 s, a
 *   cron expression croner refuses (its message is kept), one that is not 5 or 6 fields,
 *   one that never fires, or an unknown time zone.
 */
export function compileTrigger(schedule: Schedule, now: number): CompiledTrigger {
  switch (schedule.trigger) {
    case "now":
      return { kind: "now" };
    case "interval":
      return { kind: "time", time: intervalTrigger(schedule.every) };
    case "cron":
      return { kind: "time", time: cronTrigger(schedule.cron, schedule.tz, now) };
    default:
      return { kind: "event", event: schedule.trigger };
  }
}

/** An `interval` trigger: due at `armed + k * every`, k = 1, 2, … */
export function intervalTrigger(every: string): TimeTrigger {
  const ms = parseDuration(every);
  if (ms === undefined) {
    throw new JwError(
      "invalid_args",
      `bad interval ${JSON.stringify(every)}: expected a duration like "30s", "5m" or "1h"`,
      { detail: { every } },
    );
  }
  if (ms < MIN_INTERVAL_MS) {
    throw new JwError(
      "invalid_args",
      `interval must be at least 1s, got ${JSON.stringify(every)}`,
      {
        detail: { every },
      },
    );
  }
  return {
    first: (now) => now + ms,
    after: (due, now) => due + (Math.floor(Math.max(0, now - due) / ms) + 1) * ms,
  };
}

/** A `cron` trigger in `tz` (an IANA zone; default the agent's local zone). */
export function cronTrigger(expression: string, tz: string | undefined, now: number): TimeTrigger {
  const fields = expression.trim().split(/\s+/);
  if (!expression.trim().startsWith("@") && fields.length !== 5 && fields.length !== 6) {
    throw new JwError(
      "invalid_args",
      `bad cron expression ${
        JSON.stringify(expression)
      }: expected 5 fields (minute hour day month weekday) or 6 (seconds first)`,
      { detail: { cron: expression } },
    );
  }
  if (tz !== undefined) checkTimeZone(tz);
  let cron: Cron;
  try {
    cron = new Cron(expression, tz === undefined ? {} : { timezone: tz });
  } catch (err) {
    throw new JwError(
      "invalid_args",
      `bad cron expression ${JSON.stringify(expression)}: ${(err as Error).message}`,
      { detail: { cron: expression } },
    );
  }
  const next = (from: number): number | null => cron.nextRun(new Date(from))?.getTime() ?? null;
  if (next(now) === null) {
    throw new JwError(
      "invalid_args",
      `cron expression ${JSON.stringify(expression)} never fires`,
      { detail: { cron: expression } },
    );
  }
  return {
    first: (at) => next(at),
    after: (due, at) => next(Math.max(due, at)),
  };
}

/** @throws JwError `invalid_args` when `tz` is not a time zone this runtime knows. */
function checkTimeZone(tz: string): void {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: tz });
  } catch {
    throw new JwError(
      "invalid_args",
      `unknown time zone ${JSON.stringify(tz)}: use an IANA name like "Europe/Berlin"`,
      { detail: { tz } },
    );
  }
}
