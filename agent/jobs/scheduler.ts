/**
 * The scheduler: keeps each installed job's trigger armed. Time triggers (interval, cron)
 * get a timer on the Clock for their next due time — never croner's own timers, so fake
 * clocks drive them; event triggers wait in a list until the agent fires that event.
 *
 * @module
 */
import type { Clock, TimerId } from "../../shared/clock.ts";
import type { CompiledTrigger, EventTrigger, TimeTrigger } from "./triggers.ts";

/** Longest delay one timer can hold (2^31 - 1 ms, about 24.8 days); longer waits chain. */
export const MAX_TIMER_MS = 2_147_483_647;

/** Options for {@link createScheduler}. */
export interface SchedulerOptions {
  clock: Clock;
  /** Called when job `id` is due. Must not throw. */
  due(id: string): void;
}

/** Armed triggers by job id. Synchronous; used from one event loop. */
export interface Scheduler {
  /**
   * Arms `trigger` for job `id` as of now, replacing whatever was armed for that id. `now`
   * triggers arm nothing. Time triggers fire first at `trigger.first(now)`.
   */
  arm(id: string, trigger: CompiledTrigger): void;
  /** Disarms job `id` (its timer is cleared); unknown ids are ignored. */
  disarm(id: string): void;
  /** When job `id` is next due (epoch ms), or `null` (event trigger, never, or not armed). */
  next(id: string): number | null;
  /** Ids armed on `event`, in arming order (without firing them). */
  armedOn(event: EventTrigger): string[];
  /** Calls `due` for every job armed on `event`, in arming order. Returns their ids. */
  fire(event: EventTrigger): string[];
  /** Disarms everything; later calls to `arm` are ignored. */
  close(): void;
}

interface Timed {
  time: TimeTrigger;
  /** The next due time, or null when it will not fire again. */
  at: number | null;
  timer?: TimerId;
}

/** Creates an empty scheduler. */
export function createScheduler(options: SchedulerOptions): Scheduler {
  const { clock } = options;
  const timed = new Map<string, Timed>();
  const events = new Map<string, EventTrigger>();
  let closed = false;

  /** Sets the timer for `entry.at`, in hops of at most {@link MAX_TIMER_MS}. */
  const setTimer = (id: string, entry: Timed): void => {
    if (entry.at === null) return;
    const delay = Math.max(0, entry.at - clock.now());
    entry.timer = clock.setTimeout(
      () => (delay > MAX_TIMER_MS ? setTimer(id, entry) : fireTimed(id, entry)),
      Math.min(delay, MAX_TIMER_MS),
    );
  };

  const fireTimed = (id: string, entry: Timed): void => {
    entry.timer = undefined;
    if (timed.get(id) !== entry || entry.at === null) return;
    const due = entry.at;
    entry.at = entry.time.after(due, clock.now());
    setTimer(id, entry);
    options.due(id);
  };

  const disarm = (id: string): void => {
    const entry = timed.get(id);
    if (entry?.timer !== undefined) clock.clearTimeout(entry.timer);
    timed.delete(id);
    events.delete(id);
  };

  return {
    arm(id, trigger) {
      disarm(id);
      if (closed) return;
      if (trigger.kind === "event") {
        events.set(id, trigger.event);
      } else if (trigger.kind === "time") {
        const entry: Timed = { time: trigger.time, at: trigger.time.first(clock.now()) };
        timed.set(id, entry);
        setTimer(id, entry);
      }
    },
    disarm,
    next: (id) => timed.get(id)?.at ?? null,
    armedOn: (event) => [...events].filter(([, e]) => e === event).map(([id]) => id),
    fire(event) {
      const ids = [...events].filter(([, e]) => e === event).map(([id]) => id);
      for (const id of ids) options.due(id);
      return ids;
    },
    close() {
      closed = true;
      for (const id of [...timed.keys(), ...events.keys()]) disarm(id);
    },
  };
}
