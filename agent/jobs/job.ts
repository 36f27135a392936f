/**
 * The job model and the reply frames of one run.
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
  PROTOCOL_VERSION,
  type Schedule,
  type SetTag,
} from "../../shared/protocol/mod.ts";

/** A job as received: what to run and where its replies go. */
export interface Job {
  /** The job id: the one given, else `j-` + a random id. */
  id: string;
  /** Command key, `category.name`. */
  key: string;
  /** Arguments, not yet checked against the command's schema. */
  args: Record<string, unknown>;
  /** The command's `meta`, copied verbatim onto every reply; absent when the command had none. */
  meta?: Record<string, unknown>;
  /** The command frame's envelope id, carried as `id` on every reply. */
  envelopeId: string;
  /** When to run; absent means now. */
  schedule?: Schedule;
  /** Whether the job should survive restarts. */
  persistent?: boolean;
}

/** Builds the {@link Job} a `command` frame carries; makes up the id when none is given. */
export function jobFromCommand(frame: CommandFrame, random: Random): Job {
  const spec = frame.job;
  const job: Job = {
    id: spec.id ?? `j-${randomId(random)}`,
    key: spec.key,
    args: spec.args,
    envelopeId: frame.id,
  };
  if (frame.meta !== undefined) job.meta = frame.meta;
  if (spec.schedule !== undefined) job.schedule = spec.schedule;
  if (spec.persistent !== undefined) job.persistent = spec.persistent;
  return job;
}

/** The fields every reply carries. */
interface ReplyCommon {
  v: typeof PROTOCOL_VERSION;
  id: string;
  meta?: Record<string, unknown>;
  job: JobRef;
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
}

/**
 * Makes the reply frames of one run of a job: every frame carries `{v, id: envelopeId,
 * meta (when present), job: {id, key}, seq, ts}`, with `seq` counting from 0 in creation
 * order. Not shared between runs.
 */
export class Replies {
  readonly #job: Job;
  readonly #ref: JobRef;
  readonly #clock: Clock;
  #seq = 0;

  constructor(job: Job, clock: Clock) {
    this.#job = job;
    this.#ref = { id: job.id, key: job.key };
    this.#clock = clock;
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
    return this.#job.meta === undefined ? base : { ...base, meta: this.#job.meta };
  }
}
