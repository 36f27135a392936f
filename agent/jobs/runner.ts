/**
 * Runs jobs: checks what may run, runs it through the registry, and turns everything into
 * reply frames whose last one is the `done` output. Audits every command on the agent.
 *
 * @module
 */
import type { Clock } from "../../shared/clock.ts";
import { type ErrorCode, type ErrorInfo, JwError, toJwError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/log.ts";
import type { Random } from "../../shared/random.ts";
import type { AuditEvent } from "../../shared/db/mod.ts";
import type { Command as CommandFrame, Reply } from "../../shared/protocol/mod.ts";
import type { CommandExecutor } from "../executor.ts";
import type { Registry, RunContext, RunResult } from "../payload/commands.ts";
import { type Job, jobFromCommand, Replies } from "./job.ts";

/** Where audit events go (an `AuditLog`, or a recorder in tests). */
export interface AuditSink {
  append(event: AuditEvent): void;
}

/** Options for {@link createJobRunner}. */
export interface JobRunnerOptions {
  /** This agent's id (the audit target). */
  agentId: string;
  registry: Registry;
  /** Passed to commands as is: wrap it in the whitelist before. */
  executor: CommandExecutor;
  clock: Clock;
  random: Random;
  logger: Logger;
  audit: AuditSink;
  /** Delivers a reply (to the socket, or the outbox while disconnected). Must not throw. */
  send(frame: Reply): void;
  /** Applies a tag change locally (kept for the next hello). */
  setTags(tags: Record<string, string | null>): void;
}

/** Runs jobs concurrently, each independently. */
export interface JobRunner extends AsyncDisposable {
  /**
   * Runs the job a `command` frame carries and sends its replies, the last being the `done`
   * output. Resolves once that is sent; never rejects.
   * @param serverId the server that sent it (audit actor `server:<serverId>`).
   */
  run(frame: CommandFrame, serverId: string): Promise<void>;
  /** Jobs running now. */
  readonly running: number;
  /**
   * Aborts every running job (their processes are killed), waits until each has sent its
   * `done`, and makes later `run` calls finish at once with error `closed`. Idempotent.
   */
  close(): Promise<void>;
}

/** Codes that mean "not allowed to run", audited as `command.denied`. */
const DENIAL_CODES: readonly ErrorCode[] = [
  "unsupported",
  "unknown_command",
  "invalid_args",
  "not_whitelisted",
  "closed",
];

/** Creates a job runner. */
export function createJobRunner(options: JobRunnerOptions): JobRunner {
  const { clock, logger, audit } = options;
  const controller = new AbortController();
  const active = new Set<Promise<void>>();
  let closed = false;

  async function execute(frame: CommandFrame, serverId: string): Promise<void> {
    const job = jobFromCommand(frame, options.random);
    const replies = new Replies(job, clock);
    const actor = `server:${serverId}`;
    const target = options.agentId;
    audit.append({
      actor,
      action: "command.received",
      target,
      key: job.key,
      args: job.args,
      outcome: "ok",
    });
    const start = clock.now();
    let finished = false;
    const send = (reply: Reply) => {
      if (!finished) options.send(reply);
    };

    let result: RunResult;
    let ran = false;
    try {
      const denial = refusal(job) ?? (closed ? new JwError("closed", "agent is stopping") : null);
      if (denial) throw denial;
      const prepared = options.registry.prepare(job.key, job.args);
      const ctx: RunContext = {
        emitText: (stream, text) => send(replies.text(stream, text)),
        emitData: (data) => send(replies.data(data)),
        log: (level, message, fields) => send(replies.log(level, message, fields)),
        setTags: (tags) => {
          options.setTags(tags);
          send(replies.setTag(tags));
        },
        signal: controller.signal,
        clock,
        executor: options.executor,
        logger,
      };
      ran = true;
      result = await prepared.command.run(ctx, prepared.args);
    } catch (err) {
      const jwErr = toJwError(err);
      if (jwErr.code === "internal") {
        logger.error("command failed unexpectedly", {
          job: job.id,
          key: job.key,
          error: jwErr.message,
        });
      }
      result = { error: jwErr.toJSON() };
      if (DENIAL_CODES.includes(jwErr.code)) ran = false;
    }

    const error: ErrorInfo | null = result.error ?? null;
    const finish = clock.now();
    options.send(replies.done({ start, finish, exitCode: result.exitCode, error }));
    finished = true;
    if (ran) {
      audit.append({
        actor,
        action: "command.executed",
        target,
        key: job.key,
        args: job.args,
        outcome: error ? "error" : "ok",
        reason: error ? `${error.code}: ${error.message}` : undefined,
      });
    } else {
      audit.append({
        actor,
        action: "command.denied",
        target,
        key: job.key,
        args: job.args,
        outcome: "denied",
        reason: `${error?.code}: ${error?.message}`,
      });
    }
    logger.debug("job finished", {
      job: job.id,
      key: job.key,
      error: error?.code,
      ms: finish - start,
    });
  }

  return {
    run(frame, serverId) {
      const p = execute(frame, serverId).catch((err) => {
        logger.error("job runner bug", { error: toJwError(err).message });
      });
      active.add(p);
      void p.finally(() => active.delete(p));
      return p;
    },
    get running() {
      return active.size;
    },
    async close() {
      if (!closed) {
        closed = true;
        controller.abort(new JwError("closed", "agent is stopping"));
      }
      await Promise.all([...active]);
    },
    [Symbol.asyncDispose]() {
      return this.close();
    },
  };
}

/** Why a job cannot run in this version, if it cannot. */
function refusal(job: Job): JwError | null {
  if (job.schedule !== undefined && job.schedule.trigger !== "now") {
    return new JwError(
      "unsupported",
      `schedule trigger "${job.schedule.trigger}" is not supported yet: schedules arrive in a later version`,
    );
  }
  if (job.persistent === true) {
    return new JwError(
      "unsupported",
      "persistent jobs are not supported yet: they arrive in a later version",
    );
  }
  return null;
}
