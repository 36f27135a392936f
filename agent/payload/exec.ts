/**
 * `exec.run`: starts a whitelisted program (absolute path, no shell), streams its output
 * line by line and reports its exit code. A non-zero exit is not an error: the `done`
 * output carries the code and the client decides.
 *
 * @module
 */
import { z } from "zod";
import { isJwError, JwError } from "../../shared/errors.ts";
import { formatDuration, parseDuration } from "../../shared/units.ts";
import { type Command, defineCommand, type RunResult } from "./commands.ts";

/** Longest timeout: what a timer can hold (about 24.8 days). */
export const MAX_TIMEOUT_MS = 2_147_483_647;

/** A positive duration: "5s", "250ms", or a number of milliseconds. Parses to ms. */
const Timeout = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms !== undefined && ms > MAX_TIMEOUT_MS) {
    ctx.addIssue({
      code: "custom",
      message: `timeout may be at most 24d, got ${JSON.stringify(v)}`,
    });
    return z.NEVER;
  }
  if (ms === undefined || ms <= 0) {
    ctx.addIssue({
      code: "custom",
      message: `expected a positive duration like "5s" or "250ms", got ${JSON.stringify(v)}`,
    });
    return z.NEVER;
  }
  return ms;
});

/** Arguments of `exec.run`. Unknown keys are rejected. */
export const ExecArgs = z.object({
  /** Absolute path of a program on the agent's allowRun list. */
  cmd: z.string().min(1).max(4096),
  /** Arguments, passed as-is (no shell). Default []. */
  args: z.array(z.string()).max(4096).default([]),
  /** Kill the process group with SIGKILL after this long. Default: the agent's execTimeout. */
  timeout: Timeout.optional(),
  /** Working directory, absolute. Default: the agent's. */
  cwd: z.string().startsWith("/", "must be an absolute path").optional(),
  /**
   * Extra environment variables for the program, which otherwise starts with a clean
   * environment (PATH, LANG, HOME). Each name must be on the agent's `allowEnv` list;
   * names that make the dynamic loader load code (`LD_*`, `DYLD_*`) are always refused:
   * they would turn a whitelisted program into any program.
   */
  env: z.record(z.string(), z.string()).superRefine((env, ctx) => {
    for (const name of Object.keys(env)) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
        ctx.addIssue({ code: "custom", path: [name], message: "bad variable name" });
      } else if (/^(LD|DYLD)_/i.test(name)) {
        ctx.addIssue({
          code: "custom",
          path: [name],
          message: "LD_* and DYLD_* variables are not allowed",
        });
      }
    }
  }).optional(),
}).strict();
export type ExecArgs = z.output<typeof ExecArgs>;

/** Options for {@link createExecCommand}. */
export interface ExecCommandOptions {
  /** Timeout when the args give none (the agent's `execTimeout`), in ms. */
  defaultTimeoutMs: number;
  /** Environment variable names an operator may set (the agent's `allowEnv`). Default none. */
  allowEnv?: readonly string[];
}

/**
 * Creates `exec.run`. On timeout the whole process group gets SIGKILL and the run ends with
 * error `timeout` ("killed after 5s"); when the run is aborted (the agent stops, the job is
 * deleted), likewise with the abort reason (error `closed`, "killed because …").
 * A process killed by someone else ends with `exitCode: null`, no error, and a warn log.
 * Spawn problems surface as the executor's JwError (`not_whitelisted`, `spawn_failed`).
 */
export function createExecCommand(options: ExecCommandOptions): Command<ExecArgs> {
  return defineCommand({
    key: "exec.run",
    description:
      "runs a whitelisted program (absolute path, no shell) and streams its output lines",
    args: ExecArgs,
    async run(ctx, args): Promise<RunResult> {
      if (ctx.signal.aborted) throw stopReason(ctx.signal);
      const timeoutMs = Math.min(args.timeout ?? options.defaultTimeoutMs, MAX_TIMEOUT_MS);
      const allowEnv = options.allowEnv ?? [];
      for (const name of Object.keys(args.env ?? {})) {
        if (!allowEnv.includes(name)) {
          throw new JwError(
            "not_whitelisted",
            `environment variable ${name} is not on this agent's allowEnv list`,
            { detail: { name } },
          );
        }
      }
      const proc = ctx.executor.spawn({
        cmd: args.cmd,
        args: args.args,
        cwd: args.cwd,
        env: args.env,
      });
      let stopped: "timeout" | JwError | undefined;
      const stop = (why: "timeout" | JwError) => {
        stopped ??= why;
        proc.kill("SIGKILL");
      };
      const timer = ctx.clock.setTimeout(() => stop("timeout"), timeoutMs);
      const onAbort = () => stop(stopReason(ctx.signal));
      ctx.signal.addEventListener("abort", onAbort, { once: true });
      const pump = async (stream: "stdout" | "stderr") => {
        for await (const line of proc[stream]) ctx.emitText(stream, line);
      };
      try {
        const [status] = await Promise.all([proc.status, pump("stdout"), pump("stderr")]);
        if (stopped === "timeout") {
          return {
            exitCode: status.code,
            error: { code: "timeout", message: `killed after ${formatDuration(timeoutMs)}` },
          };
        }
        if (stopped !== undefined) {
          return { exitCode: status.code, error: { code: stopped.code, message: stopped.message } };
        }
        if (status.signal) {
          ctx.log("warn", `process was killed by ${status.signal}`, { signal: status.signal });
        }
        return { exitCode: status.code, error: null };
      } finally {
        ctx.clock.clearTimeout(timer);
        ctx.signal.removeEventListener("abort", onAbort);
      }
    },
  });
}

/** The JwError a run was aborted with (the runner aborts with one), else a generic `closed`. */
function stopReason(signal: AbortSignal): JwError {
  return isJwError(signal.reason)
    ? signal.reason
    : new JwError("closed", "killed because the agent is stopping");
}
