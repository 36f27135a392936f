/**
 * The job model, the record of a finished run, and the reply frames of one run.
 *
 * @module
 */
import type { Clock } from "../../shared/clock.ts";
import type { ErrorInfo } from "../../shared/errors.ts";
import { type Random, randomId } from "../../shared/random.ts";
import {
  type Command as CommandFrame,
  type JobRef,
  type Log,
  type LogLevel,
  type Output,
  type Overlap,
  PROTOCOL_VERSION,
  type Schedule,
  type SetTag,
} from "../../shared/protocol/mod.ts";

/** A job: what to run, when, and where its replies go. Immutable once created. */
export interface Job {
  /** The job id: the one given, else `j-` + a random id. */
  readonly id: string;
  /** Command key, `category.name`. */
  readonly key: string;
  /** Arguments as sent (checked against the command's schema before the job exists). */
  readonly args: Record<string, unknown>;
  /** The command's `meta`, copied verbatim onto every reply; absent when the command had none. */
  readonly meta?: Record<string, unknown>;
  /** When it runs; `{trigger: "now"}` when the command gave no schedule. */
  readonly trigger: Schedule;
  /** Kept in the agent's database and reloaded at start. */
  readonly persistent: boolean;
  /** What to do when it is due while a run is still going. */
  readonly overlap: Overlap;
  /** When the agent received it (epoch ms). */
  readonly createdAt: number;
  /** The id of the server that sent it. */
  readonly createdBy: string;
  /** The command frame's envelope id, carried as `id` on every reply of every run. */
  readonly envelopeId: string;
}

/**
 * Builds the {@link Job} a `command` frame carries; makes up the id when none is given.
 * Nothing is checked here beyond what the frame schema already did.
 */
export function jobFromCommand(
  frame: CommandFrame,
  serverId: string,
  now: number,
  random: Random,
): Job {
  const spec = frame.job;
  const job: Job = {
    id: spec.id ?? `j-${randomId(random)}`,
    key: spec.key,
    args: spec.args,
    trigger: spec.schedule ?? { trigger: "now" },
    persistent: spec.persistent ?? false,
    overlap: spec.overlap ?? "skip",
    createdAt: now,
    createdBy: serverId,
    envelopeId: frame.id,
  };
  return frame.meta === undefined ? job : { ...job, meta: frame.meta };
}

/**
 * True when a job is installed (kept, listed, and run by its trigger) rather than run once
 * right away: it has a trigger other than `now`, or it is persistent.
 */
export function isInstalled(job: Job): boolean {
  return job.trigger.trigger !== "now" || job.persistent;
}

/** A finished run, as kept in the run history and listed by `job.runs`. */
export interface RunRecord {
  /** The run id, `r-` + random. */
  run: string;
  /** Epoch ms. */
  start: number;
  /** Epoch ms. */
  finish: number;
  durationMs: number;
  /** The process exit code; `null` when there was no process or it was killed. */
  exitCode: number | null;
  /** Why the run failed; `null` when it did not. */
  error: ErrorInfo | null;
}

/** One installed job as listed by `job.list`. */
export interface JobSummary {
  id: string;
  key: string;
  trigger: Schedule;
  persistent: boolean;
  overlap: Overlap;
  createdAt: number;
  /** When a time trigger fires next (epoch ms); `null` for event triggers and `now`. */
  next: number | null;
  /** True while a run of it is going. */
  running: boolean;
  /** Due times skipped (overlap `skip`) since the agent started. */
  skipped: number;
  /** The newest finished run, if any. */
  last: RunRecord | null;
  /**
   * Present when the job is kept but never runs: a stored job that the agent's checks now
   * refuse (e.g. `forbidden` after an `allowCommands` change, `invalid_args`), or one beyond
   * `jobs.max` at start. `next` is then `null`. Replace or delete it (`job.delete`).
   */
  blocked?: JobBlock;
}

/** Why a job is kept but never runs. */
export interface JobBlock {
  code: string;
  message: string;
}

/**
 * A stored job row that no longer parses, as listed by `job.list`: it never runs, and
 * `job.delete` deletes it (installing the same id replaces it).
 */
export interface UnreadableJobSummary {
  id: string;
  /** The stored command key, when the row has one. */
  key?: string;
  /** Always code `invalid_message`, with what did not parse. */
  blocked: JobBlock;
}

/** The fields every reply carries. */
interface ReplyCommon {
  v: typeof PROTOCOL_VERSION;
  id: string;
  meta?: Record<string, unknown>;
  job: JobRef;
  run?: string;
  seq: number;
  ts: number;
}

/** The `done` output's run summary. */
export interface DoneFields {
  start: number;
  finish: number;
  /** Omitted when the command ran no process. */
  exitCode?: number | null;
  error: ErrorInfo | null;
  /** A structured result carried on the done output. */
  data?: Record<string, unknown>;
}

/**
 * Makes the reply frames of one run of a job (or of its install answer): every frame
 * carries `{v, id: envelopeId, meta (when present), job: {id, key}, run (when given), seq,
 * ts}`, with `seq` counting from 0 in creation order. Not shared between runs.
 */
export class Replies {
  readonly #job: Job;
  readonly #ref: JobRef;
  readonly #clock: Clock;
  readonly #run: string | undefined;
  #seq = 0;

  constructor(job: Job, clock: Clock, run?: string) {
    this.#job = job;
    this.#ref = { id: job.id, key: job.key };
    this.#clock = clock;
    this.#run = run;
  }

  /** Number of frames made so far (the next frame's seq). */
  get count(): number {
    return this.#seq;
  }

  /** A line of text output. */
  text(stream: "stdout" | "stderr", text: string): Output {
    return { ...this.#common(), type: "output", stream, text };
  }

  /** A structured output object. */
  data(data: Record<string, unknown>): Output {
    return { ...this.#common(), type: "output", data };
  }

  /** A log line. */
  log(level: LogLevel, message: string, fields?: Record<string, unknown>): Log {
    const frame: Log = { ...this.#common(), type: "log", level, message };
    if (fields !== undefined) frame.fields = fields;
    return frame;
  }

  /** A tag change. */
  setTag(tags: Record<string, string | null>): SetTag {
    return { ...this.#common(), type: "setTag", tags };
  }

  /** The last frame of the run. */
  done(fields: DoneFields): Output {
    const frame: Output = {
      ...this.#common(),
      type: "output",
      done: true,
      start: fields.start,
      finish: fields.finish,
      durationMs: Math.max(0, fields.finish - fields.start),
      error: fields.error,
    };
    if (fields.exitCode !== undefined) frame.exitCode = fields.exitCode;
    if (fields.data !== undefined) frame.data = fields.data;
    return frame;
  }

  #common(): ReplyCommon {
    const base: ReplyCommon = {
      v: PROTOCOL_VERSION,
      id: this.#job.envelopeId,
      job: { ...this.#ref },
      seq: this.#seq++,
      ts: this.#clock.now(),
    };
    if (this.#job.meta !== undefined) base.meta = this.#job.meta;
    if (this.#run !== undefined) base.run = this.#run;
    return base;
  }
}
