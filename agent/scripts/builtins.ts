/**
 * How a script's builtin call (`exec.run({...})` inside the sandbox) runs: through the same
 * registry, ACL, argument schema, whitelist and executor as a command sent by a server, with
 * the script's own `permissions.run` as a further limit on programs. The command's text
 * output, structured output and result are collected and handed back to the script instead
 * of being sent.
 *
 * @module
 */
import { posix } from "node:path";
import { JwError } from "../../shared/errors.ts";
import type { CommandExecutor } from "../executor.ts";
import {
  checkStructured,
  type JobState,
  type PathPolicy,
  type Registry,
  type RunContext,
} from "../payload/commands.ts";

/** What a builtin call resolves to inside a script. */
export interface BuiltinResult {
  /** Exit code of the program, for commands that start one (`null` when killed). */
  exitCode: number | null;
  /** Standard output lines joined with "\n". */
  stdout: string;
  /** Standard error lines joined with "\n". */
  stderr: string;
  /** Structured outputs the command emitted, in order. */
  output: Record<string, unknown>[];
  /** The structured result on the command's final output, or null. */
  data: Record<string, unknown> | null;
}

/** Command categories a script cannot call (a script may not register or start scripts). */
export const NOT_FROM_SCRIPTS = ["script."];

/** True when a script may see `key` as a builtin. */
export function callableFromScripts(key: string): boolean {
  return !NOT_FROM_SCRIPTS.some((prefix) => key.startsWith(prefix));
}

/**
 * Wraps an executor so only programs on the script's `permissions.run` start (on top of the
 * agent's whitelist, which `inner` already applies).
 */
export function limitPrograms(
  inner: CommandExecutor,
  script: string,
  run: readonly string[],
): CommandExecutor {
  const allowed = new Set(run.map((p) => posix.normalize(p)));
  return {
    spawn(spec) {
      const cmd = spec.cmd.startsWith("/") ? posix.normalize(spec.cmd) : spec.cmd;
      if (!allowed.has(cmd)) {
        throw new JwError(
          "not_whitelisted",
          `script "${script}" may not start ${spec.cmd}: it is not in its permissions.run`,
          { detail: { cmd: spec.cmd } },
        );
      }
      return inner.spawn({ ...spec, cmd });
    },
  };
}

/** What a script's builtin calls are limited to, besides the agent's own limits. */
export interface BuiltinLimits {
  /** The executor the call may use (see {@link limitPrograms}). */
  executor: CommandExecutor;
  /** The script's own read and write permissions (within the agent's). */
  paths: PathPolicy;
}

/**
 * The state a builtin call sees: its own slot in the script job's state, by command key and
 * arguments, so a `file.tail` inside a persistent script job resumes where it was.
 */
function builtinState(ctx: RunContext, key: string, args: unknown): JobState {
  const slot = `${key} ${JSON.stringify(args)}`;
  const slots = () => (ctx.state.get()?.builtins ?? {}) as Record<string, Record<string, unknown>>;
  return {
    get: () => slots()[slot],
    set(value) {
      ctx.state.set({ ...ctx.state.get(), builtins: { ...slots(), [slot]: value } });
    },
  };
}

/**
 * Runs one builtin call for a script. With `onEvent` (the script passed a handler, as in
 * `file.tail(args, line => …)`) every output of the command goes to it as it comes, a
 * structured output as is and a text line as `{stream, text}`, and the result carries none.
 * @param registry the agent's registry behind its ACL.
 * @param ctx the `script.run` command's context: job, logging, tags and files are shared.
 * @param limits the script's limits on programs and paths.
 * @param signal aborted when the script's run ends; a call still going is stopped.
 * @throws JwError from the lookup (`unknown_command`, `forbidden`, `invalid_args`) or the
 *   command's own error (its `done` error, e.g. `timeout`, `not_whitelisted`).
 */
export async function callBuiltin(
  registry: Registry,
  ctx: RunContext,
  limits: BuiltinLimits,
  signal: AbortSignal,
  key: string,
  args: unknown,
  onEvent?: (value: unknown) => void,
): Promise<BuiltinResult> {
  if (!callableFromScripts(key)) {
    throw new JwError("forbidden", `scripts cannot call ${key}`, { detail: { key } });
  }
  const { command, args: checked } = registry.prepare(key, args ?? {});
  const stdout: string[] = [];
  const stderr: string[] = [];
  const output: Record<string, unknown>[] = [];
  const inner: RunContext = {
    job: ctx.job,
    emitText: (stream, text) => {
      if (onEvent) onEvent({ stream, text });
      else (stream === "stdout" ? stdout : stderr).push(text);
    },
    emitData(data) {
      checkStructured(data);
      if (onEvent) onEvent(data);
      else output.push(data);
    },
    log: (level, message, fields) => ctx.log(level, message, fields),
    setTags: (tags) => ctx.setTags(tags),
    signal,
    clock: ctx.clock,
    executor: limits.executor,
    fs: ctx.fs,
    logger: ctx.logger,
    paths: limits.paths,
    state: builtinState(ctx, key, checked),
    server: ctx.server,
  };
  const result = await command.run(inner, checked);
  if (result.error) {
    throw new JwError(
      result.error.code as JwError["code"],
      result.error.message,
      result.error.detail ? { detail: result.error.detail } : {},
    );
  }
  return {
    exitCode: result.exitCode ?? null,
    stdout: stdout.join("\n"),
    stderr: stderr.join("\n"),
    output,
    data: result.data ?? null,
  };
}
