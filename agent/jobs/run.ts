/**
 * One run of a job: builds the command's RunContext, runs it, and sends its replies, the
 * last being the `done` output with the run summary.
 *
 * @module
 */
import type { Clock } from "../../shared/clock.ts";
import { type ErrorCode, type ErrorInfo, toJwError } from "../../shared/errors.ts";
import type { Fs } from "../../shared/fs/mod.ts";
import type { Logger } from "../../shared/log.ts";
import type { Reply } from "../../shared/protocol/mod.ts";
import type { CommandExecutor } from "../executor.ts";
import {
  checkStructured,
  type JobState,
  type PathPolicy,
  type PreparedCommand,
  type RunContext,
  type RunResult,
  type ServerLink,
} from "../payload/commands.ts";
import { type Job, Replies, type RunRecord } from "./job.ts";

/**
 * Codes that mean "not allowed to run", audited as `command.denied`. `closed` is not one: a
 * run killed because the agent is stopping (or its job was replaced or deleted) did run, and
 * is audited as `command.executed` with outcome `error`.
 */
export const DENIAL_CODES: readonly ErrorCode[] = [
  "unsupported",
  "unknown_command",
  "invalid_args",
  "not_whitelisted",
  "forbidden",
];

/** What a run needs from the agent. */
export interface RunDeps {
  clock: Clock;
  executor: CommandExecutor;
  fs: Fs;
  /** Where commands may read and write. */
  paths: PathPolicy;
  /** The agent's server, for files. */
  server: ServerLink;
  logger: Logger;
  /** Delivers a reply (socket or outbox). Must not throw. */
  send(frame: Reply): void;
  /** Applies a tag change locally. */
  setTags(tags: Record<string, string | null>): void;
}

/** How a run ended. */
export interface RunOutcome {
  record: RunRecord;
  /** True when the command refused to run (its error code is a denial, e.g. not_whitelisted). */
  denied: boolean;
}

/**
 * Runs `prepared` for `job` as run `runId` and sends its replies (seq from 0, each with the
 * job's envelope id, meta, job ref and run id), the last being the `done` output. Emits
 * after the done output are dropped. Never rejects: a thrown error becomes the done output's
 * `error`.
 */
export async function executeRun(
  deps: RunDeps,
  job: Job,
  runId: string,
  prepared: PreparedCommand,
  signal: AbortSignal,
  state: JobState,
): Promise<RunOutcome> {
  const { clock } = deps;
  const replies = new Replies(job, clock, runId);
  const start = clock.now();
  let finished = false;
  const send = (reply: Reply) => {
    if (!finished) deps.send(reply);
  };
  const ctx: RunContext = {
    job: {
      id: job.id,
      key: job.key,
      ...(job.meta === undefined ? {} : { meta: job.meta }),
      run: runId,
      createdBy: job.createdBy,
    },
    emitText: (stream, text) => send(replies.text(stream, text)),
    emitData: (data) => {
      checkStructured(data);
      send(replies.data(data));
    },
    log: (level, message, fields) => send(replies.log(level, message, fields)),
    setTags: (tags) => {
      deps.setTags(tags);
      send(replies.setTag(tags));
    },
    signal,
    clock,
    executor: deps.executor,
    fs: deps.fs,
    logger: deps.logger.child(job.key),
    paths: deps.paths,
    state,
    server: deps.server,
  };

  let result: RunResult;
  let denied = false;
  try {
    result = await prepared.command.run(ctx, prepared.args);
    if (result.data !== undefined) checkStructured(result.data);
  } catch (err) {
    const e = toJwError(err);
    if (e.code === "internal") {
      deps.logger.error("command failed unexpectedly", {
        job: job.id,
        key: job.key,
        error: e.message,
      });
    }
    result = { error: e.toJSON() };
    denied = DENIAL_CODES.includes(e.code);
  }

  const error: ErrorInfo | null = result.error ?? null;
  const finish = clock.now();
  const done = replies.done({ start, finish, exitCode: result.exitCode, error, data: result.data });
  send(done);
  finished = true;
  return {
    record: {
      run: runId,
      start,
      finish,
      durationMs: done.durationMs ?? 0,
      exitCode: result.exitCode ?? null,
      error,
    },
    denied,
  };
}
