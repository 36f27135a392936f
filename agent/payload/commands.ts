/**
 * The command registry: every command the agent can run, keyed `category.name`, with a zod
 * schema for its arguments. Categories live one per file beside this one.
 *
 * @module
 */
import type { z } from "zod";
import type { Clock } from "../../shared/clock.ts";
import { type ErrorInfo, JwError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/log.ts";
import { CommandKey, describeIssues, type LogLevel } from "../../shared/protocol/mod.ts";
import type { CommandExecutor } from "../executor.ts";

/** What a command's run hands to the job runner for the final `done` output. */
export interface RunResult {
  /** Process exit code (`null` when killed by a signal); omit for commands without a process. */
  exitCode?: number | null;
  /** Why the run failed; `null` or absent when it did not. */
  error?: ErrorInfo | null;
}

/** What a running command may do. Every emit becomes one reply frame, in call order. */
export interface RunContext {
  /** One line of text output on `stream`. */
  emitText(stream: "stdout" | "stderr", text: string): void;
  /** One structured output object. */
  emitData(data: Record<string, unknown>): void;
  /** A log frame for this job. */
  log(level: LogLevel, message: string, fields?: Record<string, unknown>): void;
  /** Sets (string) or deletes (null) the agent's tags and tells the server (`setTag`). */
  setTags(tags: Record<string, string | null>): void;
  /** Aborts when the agent stops; commands must end promptly (kill their processes). */
  signal: AbortSignal;
  /** Time and timers. */
  clock: Clock;
  /** Starts programs; already restricted to the agent's whitelist. */
  executor: CommandExecutor;
  /** The agent's logger, named after the job. */
  logger: Logger;
}

/**
 * One command. `run` receives arguments already checked (and defaulted) by `args`. It may
 * throw a JwError; the runner turns it into the `done` output's `error`.
 */
export interface Command<A = unknown> {
  /** `category.name`. */
  readonly key: string;
  /** Schema of the arguments object. */
  readonly args: z.ZodType<A>;
  /** Runs once per job. */
  run(ctx: RunContext, args: A): Promise<RunResult>;
}

/** Declares a command with its argument type inferred from the schema. */
export function defineCommand<S extends z.ZodType>(command: {
  key: string;
  args: S;
  run(ctx: RunContext, args: z.output<S>): Promise<RunResult>;
}): Command<z.output<S>> {
  return command as Command<z.output<S>>;
}

/** A command with arguments that passed its schema, ready to run. */
export interface PreparedCommand {
  command: Command;
  args: unknown;
}

/** Commands by key. Registration happens at start-up; lookups may happen concurrently. */
export interface Registry {
  /**
   * Adds a command.
   * @throws JwError `internal` when the key is malformed or already taken.
   */
  register(command: Command): void;
  /**
   * The command under `key`.
   * @throws JwError `unknown_command`.
   */
  get(key: string): Command;
  /**
   * Looks up `key` and checks `args` against its schema.
   * @throws JwError `unknown_command`, or `invalid_args` whose message names each failing
   *   path (unknown keys included).
   */
  prepare(key: string, args: unknown): PreparedCommand;
  /** Registered keys, sorted. */
  keys(): string[];
}

/** Creates an empty registry. */
export function createRegistry(): Registry {
  const commands = new Map<string, Command>();
  const get = (key: string): Command => {
    const command = commands.get(key);
    if (!command) {
      throw new JwError("unknown_command", `no command "${key}" on this agent`, {
        detail: { key },
      });
    }
    return command;
  };
  return {
    register(command) {
      if (!CommandKey.safeParse(command.key).success) {
        throw new JwError(
          "internal",
          `command key "${command.key}" must look like "category.name"`,
        );
      }
      if (commands.has(command.key)) {
        throw new JwError("internal", `command "${command.key}" is registered twice`);
      }
      commands.set(command.key, command);
    },
    get,
    prepare(key, args) {
      const command = get(key);
      const result = command.args.safeParse(args);
      if (!result.success) {
        throw new JwError("invalid_args", `bad args for ${key}: ${describeIssues(result.error)}`, {
          detail: { key },
        });
      }
      return { command, args: result.data };
    },
    keys: () => [...commands.keys()].sort(),
  };
}
